"""Validation of client input: everything that becomes part of a filesystem path, a ref name or a tree key goes
through these, and every client mistake is a `HubError` answered the way the Hub answers it."""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_REV_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SHA1_RE = re.compile(r"[0-9a-f]{40}")
SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")


class HubError(Exception):
    """An error answered to the client as the Hub does: JSON `{"error": ...}` plus X-Error-Message/X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def validate_repo_id(repo_id: str) -> str:
    parts = repo_id.split("/")
    if (
        len(parts) != 2
        or not all(_NAME_RE.fullmatch(part) for part in parts)
        or ".." in repo_id
        or repo_id.endswith(".git")
    ):
        raise HubError(
            400,
            f"Invalid repo id {show(repo_id)}: expected 'namespace/name' made of letters, digits, '-', '_' and '.' "
            "(starting with a letter or digit, no '..', at most 96 characters each).",
        )
    return repo_id


def validate_revision(revision: str) -> str:
    segments = revision.split("/")
    if (
        not revision
        or len(revision) > 256
        or ".." in revision
        or not all(_REV_SEGMENT_RE.fullmatch(s) and not s.endswith(".lock") for s in segments)
    ):
        raise HubError(
            400,
            f"Invalid revision {show(revision)}: use a branch or tag name (letters, digits, '-', '_', '.', '/'-separated"
            " segments, no '..') or a 40-hex commit sha.",
        )
    return revision


def validate_path_in_repo(path: str) -> str:
    parts = path.split("/")
    if (
        not path
        or len(path) > 1024
        or "\\" in path
        or path.startswith("/")
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
        or any(part in ("", ".", "..") for part in parts)
        or parts[0] == ".git"
    ):
        raise HubError(
            400,
            f"Invalid path in repo {show(path)}: use a relative POSIX path without '..'/'.' segments, backslashes, "
            "control characters or a leading '/'.",
        )
    return path


def show(value: str) -> str:
    """A short, printable rendering of untrusted input for error messages."""
    return repr(value[:120])
