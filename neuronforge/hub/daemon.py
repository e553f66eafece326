"""A small Hugging Face Hub-compatible server on loopback: the pipeline's embedded default publishing target.

This module runs it: `neuronforge-hub` (or `python -m neuronforge.hub`) serves in the foreground until SIGINT/SIGTERM,
and `ensure_running` keeps one detached server per data dir alive for pipeline runs (`server_alive` tells whether a
URL is that server).
"""

from __future__ import annotations

import argparse
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
STATE_WATCH_S = 2.0  # how often a detached server checks that its state file still names it


def _read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None


def server_alive(url: str, data_dir: Path, timeout_s: float = 2.0) -> bool:
    """True when `url` answers /api/health as a neuronforge hub serving `data_dir` (not some other process)."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout_s) as resp:
            health = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return health.get("server") == SERVER_NAME and Path(str(health.get("data_dir"))).resolve() == data_dir.resolve()


def ensure_running(data_dir: Path | str, *, timeout_s: float = 30.0) -> str:
    """URL of a live hub serving `data_dir`, starting a detached server process on a free port if none answers.

    The url and pid are recorded in `<data_dir>/server.json`; the process outlives the caller (it serves the next
    pipeline run too) and logs to `<data_dir>/server.log`. Stop it with `kill <pid>`.
    """
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
        command = [sys.executable, "-m", "neuronforge.hub", "--host", "127.0.0.1", "--port", "0"]
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
                raise RuntimeError(
                    f"The embedded hub server exited with code {proc.returncode} before serving {data_dir}; "
                    f"see {data_dir / 'server.log'}."
                )
            time.sleep(0.1)
        proc.terminate()
        raise TimeoutError(
            f"The embedded hub server did not answer within {timeout_s:.0f}s; see {data_dir}/server.log."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port; the URL is printed)")
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
    args = parser.parse_args(argv)
    if args.data_dir is None:
        from neuronforge.paths import subdir

        args.data_dir = subdir("hub")
    server = HubServer(
        args.data_dir,
        host=args.host,
        port=args.port,
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
    with server:
        if args.state_file is not None:
            write_json_atomic(
                args.state_file, {"url": server.url, "pid": os.getpid(), "data_dir": str(server.data_dir)}
            )
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
