"""The UI, as a person uses it: `dagster dev` on the real code location, a materialization launched the way the
Materialize button launches it (GraphQL), and the pages rendered by a headless Chromium.

Chromium is Debian's `chromium` package (.ci/run installs it). Without it the test fails in CI (CI=true) and is skipped
on a developer machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # dagster dev starts a webserver, a daemon and a code server: ~20 s here, more on a busy host
RUN_TIMEOUT_S = 300
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

pytestmark = [pytest.mark.ui, pytest.mark.slow]


def chromium_binary() -> str:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if found:
        return found
    message = (
        "headless Chromium is not installed: `apt-get install -y chromium` (Debian) — .ci/run installs it before "
        "`make test`"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_signals() -> None:
    # A child inherits ignored signals (from nohup, CI runners, `&` in a shell); `dagster dev` would then ignore
    # SIGINT/SIGTERM and could never be stopped cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Dagster:
    """A `dagster dev` process group and its GraphQL endpoint."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path):
        self.process = process
        self.url = url
        self.log = log

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def wait_until_loaded(self) -> str:
        """Wait for the webserver and the code location; returns the location's name."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                    pass
                entries = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
                )["workspaceOrError"]["locationEntries"]
                for entry in entries:
                    error = entry["locationOrLoadError"]
                    if error and error["__typename"] == "PythonError":
                        pytest.fail(f"code location {entry['name']} failed to load: {error['message']}")
                loaded = [e["name"] for e in entries if e["loadStatus"] == "LOADED"]
                if loaded:
                    return loaded[0]
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = str(exc)
            time.sleep(1)
        pytest.fail(f"dagster dev not ready after {START_TIMEOUT_S}s ({last_error}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGINT (dagster dev then stops its webserver, daemon and code servers), then the whole group by force."""
        for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=grace)
                # Children of the group may outlive the parent briefly: make sure none is left.
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
            return


@pytest.fixture
def dagster(tmp_path: Path) -> Iterator[Dagster]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-local.yaml", dagster_home / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "NEURONFORGE_HOME": str(tmp_path / "neuronforge"),
        "HF_HUB_DISABLE_XET": "1",
        "PYTHONUNBUFFERED": "1",
    }
    executable = Path(sys.executable).parent / "dagster"
    log = tmp_path / "dagster-dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(executable), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=default_signals,
            start_new_session=True,  # its own process group, so stop() reaches every child it starts
        )
    server = Dagster(process, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        server.stop()


class _Text(HTMLParser):
    """The text a person sees: every text node outside <script>/<style>."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.texts.append(data.strip())


def page_texts(browser: str, url: str, profile: Path, expected: set[str]) -> list[str]:
    """Render `url` headless and return its visible text; retried while expected texts are still missing (the SPA
    fetches its data after the first paint)."""
    texts: list[str] = []
    for attempt in range(3):
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1600,6000",  # tall: the catalog is a virtualized table that renders visible rows only
                f"--virtual-time-budget={20000 * (attempt + 1)}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            timeout=180,
        )
        assert result.returncode == 0, f"chromium failed on {url}: {result.stderr.decode(errors='replace')[-2000:]}"
        parser = _Text()
        parser.feed(result.stdout.decode(errors="replace"))
        texts = parser.texts
        if expected <= set(texts):
            break
    return texts


@pytest.fixture
def browser() -> str:
    return chromium_binary()  # before `dagster`: no need to start a server when the test cannot run


def test_ui_materializes_corpus_and_shows_every_asset_check_and_automation(
    browser: str, dagster: Dagster, tmp_path: Path
) -> None:
    # The truth to compare the UI with: the same code location, loaded in this process.
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    asset_keys = {tuple(k.path) for k in repo.asset_graph.get_all_asset_keys()}
    check_keys = {(tuple(k.asset_key.path), k.name) for k in repo.asset_graph.asset_check_keys}
    assert check_keys, "the code location should define asset checks"

    location = dagster.wait_until_loaded()
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__"}

    # Materialize ["corpus"] as the UI's Materialize button does: the implicit asset job, an asset subset, no config.
    launched = dagster.graphql(
        """mutation Launch($params: ExecutionParams!) {
             launchPipelineExecution(executionParams: $params) {
               __typename
               ... on LaunchRunSuccess { run { runId } }
               ... on PythonError { message }
               ... on InvalidSubsetError { message }
               ... on RunConfigValidationInvalid { errors { message } }
             }
           }""",
        {
            "params": {
                "selector": {
                    **selector,
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": [{"path": ["corpus"]}],
                    "assetCheckSelection": [],
                },
                "mode": "default",
                "runConfigData": {},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = "QUEUED"
    while time.monotonic() < deadline:
        status = dagster.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )["runOrError"]["status"]
        if status in TERMINAL:
            break
        time.sleep(1)
    if status != "SUCCESS":
        events = dagster.graphql(
            "query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename "
            "... on MessageEvent { message } } } } }",
            {"id": run_id},
        )["logsForRun"]["events"]
        messages = "\n".join(e.get("message") or e["__typename"] for e in events[-30:])
        pytest.fail(f"run {run_id} ended {status}:\n{messages}\n--- dagster dev ---\n{dagster.log_tail()}")

    # The asset catalog, as a person sees it: every asset key, and corpus now materialized.
    labels = {" / ".join(path) for path in asset_keys}
    texts = page_texts(browser, f"{dagster.url}/assets", tmp_path / "chromium", labels)
    missing = sorted(labels - set(texts))
    assert not missing, f"asset catalog does not show {missing}; it shows: {texts[:200]}"
    corpus_row = texts.index("corpus")
    assert "Materialized" in texts[corpus_row : corpus_row + 10], texts[corpus_row : corpus_row + 10]

    # Every check, as the UI's asset pages get them.
    nodes = dagster.graphql(
        "{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } } }"
    )["assetNodes"]
    shown_checks = {
        (tuple(node["assetKey"]["path"]), check["name"])
        for node in nodes
        for check in (node["assetChecksOrError"].get("checks") or [])
    }
    assert shown_checks == check_keys
    assert {tuple(node["assetKey"]["path"]) for node in nodes} == asset_keys

    # Sensors and schedules on the Automation page; only the declarative-automation sensor runs by default.
    automation = {s.name for s in repo.sensor_defs} | {s.name for s in repo.schedule_defs}
    texts = page_texts(browser, f"{dagster.url}/automation", tmp_path / "chromium", automation)
    assert not automation - set(texts), f"automation page does not show {sorted(automation - set(texts))}"
    states = dagster.graphql(
        "query($s: RepositorySelector!) { repositoryOrError(repositorySelector: $s) { ... on Repository { "
        "sensors { name sensorState { status } } schedules { name executionTimezone } } } }",
        {"s": selector},
    )["repositoryOrError"]
    running = {s["name"] for s in states["sensors"] if s["sensorState"]["status"] == "RUNNING"}
    assert running == {"default_automation_sensor"}
    assert {s["executionTimezone"] for s in states["schedules"]} == {"UTC"}
