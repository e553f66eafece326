"""What a commit's tree is made of: file entries, git blob ids, LFS pointers and the .gitattributes rules that decide
which files go to LFS."""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from typing import Any

LFS_THRESHOLD_BYTES = 10 * 1024 * 1024  # the Hub stores anything above 10 MB in LFS whatever its name
# The Hub's default .gitattributes, plus the binaries our exporters write (.data = ONNX external weights, .neff, .gguf).
DEFAULT_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz *.onnx "
    "*.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar *.tflite *.tgz "
    "*.wasm *.xz *.zip *.zst *tfevents* *.data *.neff *.gguf"
).split()


@dataclass(frozen=True)
class Entry:
    """One file in a commit's tree."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob id: of the content for regular files, of the LFS pointer for LFS files

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Entry:
        return cls(sha256=raw["sha256"], size=raw["size"], lfs=raw["lfs"], oid=raw["oid"])

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "oid": self.oid}

    @property
    def etag(self) -> str:
        # What huggingface_hub compares against its local oid: sha256 for LFS files, git blob sha1 otherwise.
        return self.sha256 if self.lfs else self.oid


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports as a regular file's oid/ETag."""
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)  # not header + data: that would copy the file once more
    return digest.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def default_gitattributes() -> bytes:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()


def lfs_patterns(gitattributes: bytes) -> list[tuple[str, bool]]:
    """(pattern, is_lfs) rules from a .gitattributes file, in order (the last matching rule wins, as in git)."""
    rules = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        attrs = fields[1:]
        if "filter=lfs" in attrs:
            rules.append((fields[0], True))
        elif "-filter" in attrs or "!filter" in attrs:
            rules.append((fields[0], False))
    return rules


def matches_lfs(path: str, rules: list[tuple[str, bool]]) -> bool:
    result = False
    for pattern, is_lfs in rules:
        # git: a pattern without '/' matches the file name at any depth, one with '/' the path from the root.
        target = path if "/" in pattern else path.rsplit("/", 1)[-1]
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
            result = is_lfs
    return result


def tree_folders(tree: dict[str, Entry]) -> set[str]:
    """Every folder a tree implies (git trees have no empty folders)."""
    found = set()
    for path in tree:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            found.add("/".join(parts[:i]))
    return found
