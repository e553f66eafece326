"""ensure_running / server_alive: one detached hub per data dir, replaced when dead, gone when its state is."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from huggingface_hub import HfApi

from neuronforge.hub import ensure_running, server_alive


def test_ensure_running_starts_one_detached_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    url = ensure_running(data_dir)
    pid = json.loads((data_dir / "server.json").read_text())["pid"]
    try:
        assert server_alive(url, data_dir)
        assert ensure_running(data_dir) == url  # alive: reused, no second process
        assert json.loads((data_dir / "server.json").read_text())["pid"] == pid
        HfApi(endpoint=url, token=False).create_repo("org/m")
        assert not server_alive(url, tmp_path / "elsewhere")  # a server for another data dir does not count
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while server_alive(url, data_dir) and time.time() < deadline:
        time.sleep(0.1)
    url2 = ensure_running(data_dir)  # dead → a new process on the same data (the repo is still there)
    pid2 = json.loads((data_dir / "server.json").read_text())["pid"]
    try:
        assert pid2 != pid
        assert HfApi(endpoint=url2, token=False).repo_exists("org/m")
        # Wiping the data dir's state (or another server taking over) makes the detached server leave by itself.
        (data_dir / "server.json").unlink()
        deadline = time.time() + 15
        while server_alive(url2, data_dir) and time.time() < deadline:
            time.sleep(0.2)
        assert not server_alive(url2, data_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid2, signal.SIGTERM)
