"""Artifact folders: atomic writes, sha256 manifests and the compile key.

Every exported artifact is a folder with a `manifest.json` naming the backend, static shapes, toolchain versions,
source model + resolved revision, the compile key and the sha256 of every other file. Folders are built in a
temporary sibling and renamed into place, so a crash never leaves a half-written artifact where a reader looks.

A manifest says both what an artifact is and when it was built (`BUILD_FIELDS`, e.g. `created_at`). Two artifacts
are the same when everything but the build fields is equal (`same_artifact`): an identical re-export is not a new
artifact, and publishing it changes nothing on the Hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# Files a Hub repository adds around a published artifact (the model card, LFS attributes): allowed beside it.
REPO_FILES = frozenset({"README.md", ".gitattributes"})
# When and where an artifact was built: recorded in the manifest, never part of what identifies it.
BUILD_FIELDS = frozenset({"created_at"})


class ManifestError(RuntimeError):
    """An artifact folder does not match its manifest (missing, extra or altered files)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(payload: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable value, independent of dict ordering."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def compile_key(
    *,
    model_id: str,
    revision: str,
    backend: str,
    shapes: Mapping[str, Any],
    options: Mapping[str, Any],
    toolchain: Mapping[str, str],
) -> str:
    """Our own key for everything that changes the compiled binary.

    optimum-neuron's compile cache keys ignore the model revision and weights, so a new upstream commit would silently
    reuse a stale NEFF; this key includes the resolved revision sha and every toolchain version.
    """
    return stable_hash(
        {
            "model_id": model_id,
            "revision": revision,
            "backend": backend,
            "shapes": dict(shapes),
            "options": dict(options),
            "toolchain": dict(toolchain),
        }
    )


def current_umask() -> int:
    """The process umask. Linux reports it in /proc without changing it; elsewhere set-and-restore (not thread-safe,
    but only reached off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def artifact_identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies an artifact: its manifest without the build fields (compile key, file sha256s, shapes, ...)."""
    return {key: value for key, value in manifest.items() if key not in BUILD_FIELDS}


def same_artifact(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when two manifests describe the same artifact, whenever each was built."""
    return artifact_identity(a) == artifact_identity(b)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so readers see either the old or the new content, never a torn one.

    The file gets the mode a plain `open(path, "w")` would (0666 minus the umask): mkstemp's owner-only 0600 would
    lock a group out of a shared data directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_bytes(payload: Any) -> bytes:
    """The bytes every JSON file we write holds (manifests included): sorted keys, 2-space indent, final newline."""
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json_atomic(path: Path, payload: Any) -> None:
    write_bytes_atomic(path, json_bytes(payload))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On error the temporary folder is removed and any previous `final` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; a plain mkdir would honour the umask
        yield tmp
        if final.exists():
            # rename() cannot replace a non-empty folder: move the old one aside first, then drop it.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, keyed by POSIX relative path."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Add the sha256 of every file in `folder` to `manifest` and write it as manifest.json."""
    full = dict(manifest)
    full["files"] = file_hashes(folder)
    write_json_atomic(Path(folder) / MANIFEST, full)
    return full


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{folder} has no {MANIFEST}: it is not a neuronforge artifact (re-run the export asset).")
    return json.loads(path.read_text())


def verify_manifest(folder: Path) -> dict[str, Any]:
    """Refuse a folder whose files differ from its manifest; return the manifest when they match."""
    manifest = read_manifest(folder)
    expected: dict[str, str] = manifest.get("files", {})
    actual = file_hashes(folder)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected) - REPO_FILES)
    altered = sorted(name for name in set(expected) & set(actual) if expected[name] != actual[name])
    if missing or extra or altered:
        raise ManifestError(
            f"{folder} does not match its {MANIFEST}: missing={missing} extra={extra} altered={altered}. "
            "The artifact was modified or only partly copied; re-export it (materialize its export asset) "
            "or download it again."
        )
    return manifest
