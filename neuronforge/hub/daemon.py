"""A small Hugging Face Hub-compatible server on loopback: the pipeline's embedded default publishing target.

This module runs it: `neuronforge-hub` (or `python -m neuronforge.hub`) serves in the foreground until SIGINT/SIGTERM;
`neuronforge-hub --detach` (`make hub`) and `ensure_running` keep one detached server per data dir alive for pipeline
runs, and `neuronforge-hub --stop` (`make hub-stop`) stops it (`server_alive` tells whether a URL is that server).

The port is stable — DEFAULT_PORT, or NEURONFORGE_HUB_PORT / --port — so the repo URLs a run records keep working in
the next one. If another program holds it, starting fails with a message naming the port and how to pick another.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from neuronforge.artifacts import write_json_atomic
from neuronforge.hub.handler import SERVER_NAME
from neuronforge.hub.objects import LFS_THRESHOLD_BYTES
from neuronforge.hub.server import DEFAULT_MAX_JSON_BYTES, DEFAULT_MAX_UPLOAD_BYTES, HubServer
from neuronforge.locks import file_lock

STATE_FILE = "server.json"
TOKEN_ENV = "NEURONFORGE_HUB_TOKEN"
PORT_ENV = "NEURONFORGE_HUB_PORT"
DEFAULT_PORT = 8742
STATE_WATCH_S = 2.0  # how often a detached server checks that its state file still names it
EXIT_PORT_TAKEN = 3


def default_port() -> int:
    """NEURONFORGE_HUB_PORT, else DEFAULT_PORT (0: any free port, what the test suite uses)."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"{PORT_ENV}={raw!r} is not a port number (0-65535; 0 picks any free port).")
    return int(raw)


def _read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None


def _health(url: str, timeout_s: float) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout_s) as resp:
            health = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException):
        # HTTPException: a server dying mid-answer (IncompleteRead, RemoteDisconnected) is not alive either.
        return None
    return health if isinstance(health, dict) and health.get("server") == SERVER_NAME else None


def server_alive(url: str, data_dir: Path, timeout_s: float = 2.0) -> bool:
    """True when `url` answers /api/health as the neuronforge hub recorded in `data_dir`'s state file: the same
    random instance id (health shows nothing else about the server, so that id is what proves it serves data_dir)."""
    state = _read_state(Path(data_dir) / STATE_FILE) or {}
    health = _health(url, timeout_s)
    return health is not None and bool(state.get("instance")) and health.get("instance") == state["instance"]


def ensure_running(data_dir: Path | str, *, port: int | None = None, timeout_s: float = 30.0) -> str:
    """URL of a live hub serving `data_dir`, starting a detached server process if none answers.

    It listens on 127.0.0.1:`port` (default: `default_port()`, stable across runs). The url, pid and instance id are
    recorded in `<data_dir>/server.json`; the process outlives the caller (it serves the next pipeline run too) and
    logs to `<data_dir>/server.log`. Stop it with `stop(data_dir)` (`make hub-stop`).
    """
    port = default_port() if port is None else port
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state_file = data_dir / STATE_FILE
    # One starter at a time per data dir, across processes (several Dagster step processes may ask at once).
    with file_lock(data_dir / ".server.lock"):
        state = _read_state(state_file)
        if state and server_alive(state.get("url", ""), data_dir):
            return state["url"]
        from neuronforge.paths import REPO_ROOT

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "neuronforge.hub", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--data-dir", str(data_dir), "--state-file", str(state_file)]
        started = time.time()
        with open(data_dir / "server.log", "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,  # detached: a Ctrl-C or the end of the calling step does not stop it
            )
        while time.time() - started < timeout_s:
            state = _read_state(state_file)
            if state and state.get("pid") == proc.pid and server_alive(state["url"], data_dir):
                return state["url"]
            if proc.poll() is not None:
                if proc.returncode == EXIT_PORT_TAKEN:
                    raise RuntimeError(_port_taken_message("127.0.0.1", port))
                raise RuntimeError(
                    f"The embedded hub server exited with code {proc.returncode} before serving {data_dir}; "
                    f"see {data_dir / 'server.log'}."
                )
            time.sleep(0.1)
        proc.terminate()
        raise TimeoutError(
            f"The embedded hub server did not answer within {timeout_s:.0f}s; see {data_dir}/server.log."
        )


def _port_taken_message(host: str, port: int) -> str:
    other = _health(f"http://{host}:{port}", 2.0)
    holder = "another neuronforge hub (serving another data dir)" if other else "another program"
    return (
        f"Port {port} on {host} is in use by {holder}, so the embedded hub cannot start there. Stop that one "
        f"(`make hub-stop` with its NEURONFORGE_HOME) or choose another port: {PORT_ENV}=<port> (0 = any free port)."
    )


def stop(data_dir: Path | str, *, timeout_s: float = 15.0) -> str:
    """Stop the detached hub recorded in `data_dir`'s state file; says what it did."""
    data_dir = Path(data_dir).resolve()
    state = _read_state(data_dir / STATE_FILE)
    if not state or not server_alive(str(state.get("url", "")), data_dir):
        return f"No hub is running for {data_dir}."
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # started by this very process: reap it, or it stays a zombie
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise TimeoutError(f"The hub (pid {pid}) did not stop within {timeout_s:.0f}s after SIGTERM; kill -9 {pid}.")
    return f"Stopped the hub at {state['url']} (pid {pid})."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port (default ${PORT_ENV} or {DEFAULT_PORT}; 0: any free port)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="storage folder (default: <NEURONFORGE_HOME>/hub)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require this bearer token for writes (default: ${TOKEN_ENV}; prefer the variable: argv is visible)",
    )
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES, help="largest LFS file")
    parser.add_argument("--max-json-bytes", type=int, default=DEFAULT_MAX_JSON_BYTES, help="largest other request")
    parser.add_argument("--lfs-threshold-bytes", type=int, default=LFS_THRESHOLD_BYTES, help="files above go to LFS")
    parser.add_argument("--public-url", default=None, help="URL clients use, when behind a proxy")
    parser.add_argument("--state-file", type=Path, default=None, help="write {url, pid, data_dir} here once serving")
    parser.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--detach", action="store_true", help="start a detached server for the data dir (make hub)")
    action.add_argument("--stop", action="store_true", help="stop the data dir's detached server (make hub-stop)")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        from neuronforge.paths import subdir

        args.data_dir = subdir("hub")
    try:
        port = default_port() if args.port is None else args.port
    except ValueError as exc:
        parser.error(str(exc))
    if args.stop:
        print(stop(args.data_dir))
        return 0
    if args.detach:
        try:
            url = ensure_running(args.data_dir, port=port)
        except (RuntimeError, TimeoutError) as exc:
            print(f"{SERVER_NAME}: {exc}", file=sys.stderr)
            return EXIT_PORT_TAKEN
        print(
            f"{url}  (data dir {Path(args.data_dir).resolve()}; repo pages at {url}/<org>/<repo>; stop: make hub-stop)"
        )
        return 0
    server = HubServer(
        args.data_dir,
        host=args.host,
        port=port,
        token=args.token,
        max_upload_bytes=args.max_upload_bytes,
        max_json_bytes=args.max_json_bytes,
        lfs_threshold=args.lfs_threshold_bytes,
        public_url=args.public_url,
        verbose=args.verbose,
    )
    # Block the stop signals in every thread (threads inherit the mask) and wait for them here. A Python handler
    # would only run once the main thread wakes up, and a signal the kernel delivers to a server thread never wakes
    # a main thread parked on a lock: the process would ignore SIGTERM now and then.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        server.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"{SERVER_NAME}: {_port_taken_message(args.host, port)}", file=sys.stderr)
        return EXIT_PORT_TAKEN
    with server:
        if args.state_file is not None:
            state = {"url": server.url, "pid": os.getpid(), "data_dir": str(server.data_dir)}
            write_json_atomic(args.state_file, {**state, "instance": server.instance_id})
        print(server.url, flush=True)
        print(
            f"{SERVER_NAME}: serving {server.data_dir} (token {'required' if server.token else 'off'})", file=sys.stderr
        )
        while signal.sigtimedwait(stop_signals, STATE_WATCH_S) is None:
            # A detached server (ensure_running) leaves when its state file is gone (data dir wiped) or names another
            # process (it was taken for dead and replaced): orphans never pile up.
            if args.state_file is not None and (_read_state(args.state_file) or {}).get("pid") != os.getpid():
                print(f"{SERVER_NAME}: {args.state_file} no longer names this process; exiting", file=sys.stderr)
                break
    return 0
