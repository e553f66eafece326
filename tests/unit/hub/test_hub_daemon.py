"""ensure_running / server_alive: one detached hub per data dir, replaced when dead, gone when its state is."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from neuronforge.hub import ensure_running, main, server_alive
from neuronforge.hub.daemon import DEFAULT_PORT, PORT_ENV, default_port, stop


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_port_is_stable_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)
    assert default_port() == DEFAULT_PORT
    monkeypatch.setenv(PORT_ENV, "9123")
    assert default_port() == 9123
    monkeypatch.setenv(PORT_ENV, "http")
    with pytest.raises(ValueError, match=PORT_ENV):
        default_port()


def test_ensure_running_uses_the_port_and_names_it_when_taken(tmp_path: Path) -> None:
    port = free_port()
    url = ensure_running(tmp_path / "a", port=port)
    try:
        assert url == f"http://127.0.0.1:{port}"
        # Another data dir wants the same port: a clear error naming the port, who holds it and the setting.
        with pytest.raises(RuntimeError, match=f"Port {port} .* another neuronforge hub .*{PORT_ENV}"):
            ensure_running(tmp_path / "b", port=port)
        # Stopped and started again, it comes back at the same URL: recorded repo URLs keep working.
        assert "Stopped" in stop(tmp_path / "a")
        assert not server_alive(url, tmp_path / "a")
        assert "No hub is running" in stop(tmp_path / "a")
        assert ensure_running(tmp_path / "a", port=port) == url
    finally:
        stop(tmp_path / "a")
    with socket.socket() as squatter:  # some other program on a port
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        squatter.listen()
        with pytest.raises(RuntimeError, match=f"Port {port} on 127.0.0.1 is in use by another program"):
            ensure_running(tmp_path / "c", port=port)


def test_cli_detach_and_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    data_dir = tmp_path / "hub"
    assert main(["--detach", "--data-dir", str(data_dir), "--port", str(port)]) == 0
    try:
        assert capsys.readouterr().out.startswith(f"http://127.0.0.1:{port}  (data dir {data_dir}")
        assert server_alive(f"http://127.0.0.1:{port}", data_dir)
    finally:
        assert main(["--stop", "--data-dir", str(data_dir)]) == 0
    assert "Stopped the hub" in capsys.readouterr().out
    assert not server_alive(f"http://127.0.0.1:{port}", data_dir)


def test_server_alive_is_false_for_a_server_dying_mid_answer(tmp_path: Path) -> None:
    # A hub killed while answering /api/health: the client sees IncompleteRead (an http.client.HTTPException).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_half() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"status": ')

        thread = threading.Thread(target=answer_half)
        thread.start()
        assert server_alive(f"http://127.0.0.1:{port}", tmp_path) is False
        thread.join()


def test_embedded_hub_with_a_token_is_published_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NEURONFORGE_HUB_TOKEN set: the embedded server requires it, and HubResource sends it (401 on every publish
    before, as HubResource read HF_TOKEN only)."""
    from test_publish import make_artifact

    from resources.hub import HubResource

    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEURONFORGE_HUB_TOKEN", "embedded-secret-5e1f")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    data_dir = tmp_path / "home" / "hub"
    try:
        result = HubResource(backoff_s=0.01).publish(make_artifact(tmp_path / "art"), model_name="m")
        assert result.created_commit
        url = json.loads((data_dir / "server.json").read_text())["url"]
        assert HfApi(endpoint=url, token=False).repo_exists(result.repo_id)
        with pytest.raises(Exception, match="401"):  # the server does require the token
            HfApi(endpoint=url, token=False).create_repo("org/anonymous")
    finally:
        stop(data_dir)
