"""Files and folders the project writes honour the process umask, so a data directory can be shared by a group
(issue #15: the atomic writer created every file 0600 through mkstemp)."""

from __future__ import annotations

import os
import stat

import pytest

from neuronforge.artifacts import atomic_dir, write_bytes_atomic, write_json_atomic
from neuronforge.records import RecordStore


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o002, 0o664, 0o775), (0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    write_json_atomic(tmp_path / "b.json", {"k": 1})
    write_bytes_atomic(tmp_path / "a.bin", b"rewritten")  # replacing keeps the umask's mode too
    assert mode(tmp_path / "a.bin") == file_mode
    assert mode(tmp_path / "b.json") == file_mode
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "f.txt").write_text("y")
    assert mode(tmp_path / "folder") == dir_mode
    record = RecordStore(tmp_path / "home").write("corpus", "default", "k1", {"x": 1})
    assert mode(record.path) == file_mode


def test_a_group_shared_data_dir_is_group_writable(tmp_path, umask):
    umask(0o002)
    shared = tmp_path / "shared"
    shared.mkdir()
    write_bytes_atomic(shared / "stages" / "s" / "shard.parquet", b"data")
    assert mode(shared / "stages" / "s" / "shard.parquet") & 0o060 == 0o060
