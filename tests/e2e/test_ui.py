"""The UI as the user's report, as a person gets there: `make run`, `dagster dev`, a second `make run` that has nothing
new to do, and the pages rendered by a headless Chromium (asserted on their DOM).

One module-scoped session: the default pipeline runs twice through the `neuronforge` code location (the README's
`make run`, on a scratch data directory and instance, publishing to a loopback Hub), with `dagster dev` and its daemon
running during the second run, so the running automation sensor sees everything a user's would.

Chromium is Debian's `chromium` package (.ci/run installs it). Without it the test fails in CI (CI=true) and is skipped
on a developer machine.
"""

from __future__ import annotations

import json
import os
import re
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

import dagster as dg
import pytest
from headless_chromium import HEADLESS_FLAGS, chromium_binary

from neuronforge.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # dagster dev starts a webserver, a daemon and a code server: ~20 s here, more on a busy host
RUN_TIMEOUT_S = 300
MAKE_RUN_TIMEOUT_S = 2400  # the whole default pipeline on 2 shared cores (≈5 min idle, 13 min under load)
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
LOCATION = "neuronforge"
# The one check a fresh data directory cannot evaluate (no earlier chat evaluation to compare latency with).
FIRST_RUN_WARNINGS = {"smollm2_135m_instruct/chat_smoke_eval:latency_vs_last_run"}

pytestmark = [pytest.mark.ui, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_signals() -> None:
    # A child inherits ignored signals (from nohup, CI runners, `&` in a shell); `dagster dev` would then ignore
    # SIGINT/SIGTERM and could never be stopped cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ------------------------------------------------------------------------------------------- the user's session


class Session:
    """The scratch data directory, instance, models.yaml and Hub that `make run` and `dagster dev` share."""

    def __init__(self, root: Path, hub_url: str):
        self.root = root
        self.dagster_home = root / "dagster_home"
        self.home = root / "neuronforge"
        self.models = root / "models.yaml"
        # Screenshots: kept where NEURONFORGE_UI_SHOTS says (to look at them), else beside the session.
        self.shots = Path(os.environ.get("NEURONFORGE_UI_SHOTS") or root / "shots")
        self.shots.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "models.yaml", self.models)
        # The SmolLM2 conversion (~45 s) is content-addressed: share the test run's cache instead of redoing it.
        shared = Path(os.environ["NEURONFORGE_HOME"]) / "cache" / "converted"
        shared.mkdir(parents=True, exist_ok=True)
        (self.home / "cache").mkdir(parents=True)
        (self.home / "cache" / "converted").symlink_to(shared)
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "NEURONFORGE_HOME": str(self.home),
            "NEURONFORGE_MODELS": str(self.models),
            "NEURONFORGE_HUB_ENDPOINT": hub_url,
            "HF_HUB_DISABLE_XET": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def make_run(self, log_name: str) -> subprocess.CompletedProcess[str]:
        """The README's `make run`, with this session's settings (the Makefile reads them from the environment)."""
        venv = Path(sys.executable).parent.parent
        log = self.root / log_name
        with log.open("w") as out:
            done = subprocess.run(
                ["make", "--no-print-directory", "run", f"VENV={venv}"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=MAKE_RUN_TIMEOUT_S,
            )
        assert done.returncode == 0, f"make run failed:\n{log.read_text(errors='replace')[-6000:]}"
        return done

    def instance(self) -> dg.DagsterInstance:
        from dagster._core.instance.ref import InstanceRef

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))

    def definitions(self) -> dg.Definitions:
        from pipelines.definitions import build_definitions

        return build_definitions(load_registry(self.models))


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
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def location_entries(self) -> list[dict[str, Any]]:
        return self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )["workspaceOrError"]["locationEntries"]

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
                entries = self.location_entries()
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

    def wait_for_run(self, run_id: str) -> str:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        status = "QUEUED"
        while time.monotonic() < deadline:
            status = self.graphql(
                "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )["runOrError"]["status"]
            if status in TERMINAL:
                return status
            time.sleep(1)
        return status

    def automation_ticks(self) -> list[dict[str, Any]]:
        """The running automation sensor's ticks, newest first (the daemon evaluates it every ~30 s)."""
        state = self.graphql(
            "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState { "
            "ticks(limit: 50) { status timestamp runIds } } } } }",
            {
                "s": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "sensorName": "default_automation_sensor",
                }
            },
        )["sensorOrError"]["sensorState"]
        return state["ticks"]

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


class Runs:
    """What the session's runs did, read from the instance."""

    def __init__(self, first: str, second: str, baseline_cursor: str | None, after_second: Any):
        self.first, self.second = first, second
        self.baseline_cursor = baseline_cursor  # automation evaluated once after the first make run
        self.after_second = after_second  # ... and again after the second (no-op) one


def materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetMaterialization]:
    events = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {
        e.event_log_entry.asset_materialization.asset_key.to_user_string(): e.event_log_entry.asset_materialization
        for e in events
    }


def data_versions(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    events = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {
        e.event_log_entry.asset_materialization.asset_key.to_user_string(): e.event_log_entry.tags.get(
            "dagster/data_version"
        )
        for e in events
    }


@pytest.fixture(scope="module")
def browser() -> str:
    return chromium_binary()  # first: no need to run anything when the test cannot run


@pytest.fixture(scope="module")
def session(browser: str, tmp_path_factory: pytest.TempPathFactory, hub) -> Session:
    return Session(tmp_path_factory.mktemp("ui"), hub.url)


@pytest.fixture(scope="module")
def first_run(session: Session) -> str:
    session.make_run("make-run-1.log")
    with session.instance() as instance:
        runs = instance.get_runs()
    assert len(runs) == 1
    return runs[0].run_id


@pytest.fixture(scope="module")
def dagster(first_run: str, session: Session) -> Iterator[Dagster]:
    port = free_port()
    log = session.root / "dagster-dev.log"
    executable = Path(sys.executable).parent / "dagster"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(executable), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=session.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=default_signals,
            start_new_session=True,  # its own process group, so stop() reaches every child it starts
        )
    server = Dagster(process, f"http://127.0.0.1:{port}", log)
    try:
        assert server.wait_until_loaded() == LOCATION
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def runs(dagster: Dagster, first_run: str, session: Session) -> Runs:
    defs = session.definitions()
    with session.instance() as instance:
        baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    # The second `make run`, while the UI and its daemon (with the running automation sensor) are up.
    session.make_run("make-run-2.log")
    with session.instance() as instance:
        second = next(r.run_id for r in instance.get_runs() if r.run_id != first_run)
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    return Runs(first_run, second, baseline.cursor, after)


# ----------------------------------------------------------------------------------------------------- the browser


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


def render(browser: str, url: str, profile: Path, budget_ms: int, screenshot: Path | None = None) -> str:
    """The DOM of `url` after the SPA fetched its data (virtual time), optionally with a screenshot."""
    flags = [
        browser,
        *HEADLESS_FLAGS,
        f"--user-data-dir={profile}",
        "--window-size=1600,6000",  # tall: the catalog is a virtualized table that renders visible rows only
        f"--virtual-time-budget={budget_ms}",
    ]
    if screenshot is not None:
        # A screen a person would look at (the DOM pass below uses a tall window for virtualized tables).
        shot_flags = [f for f in flags if not f.startswith("--window-size")] + ["--window-size=1600,1000"]
        shot = subprocess.run([*shot_flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
        assert shot.returncode == 0, f"chromium screenshot of {url} failed: {shot.stderr.decode()[-2000:]}"
    result = subprocess.run([*flags, "--dump-dom", url], capture_output=True, timeout=180)
    assert result.returncode == 0, f"chromium failed on {url}: {result.stderr.decode(errors='replace')[-2000:]}"
    return result.stdout.decode(errors="replace")


def texts_of(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    return parser.texts


def page(browser: str, url: str, profile: Path, ready: Any, screenshot: Path | None = None) -> str:
    """Render `url` until `ready(html)` holds (the SPA fetches its data after the first paint), at most 3 times
    with longer budgets; returns the last DOM."""
    html = ""
    for attempt in range(3):
        html = render(browser, url, profile, 20000 * (attempt + 1), screenshot if attempt == 0 else None)
        if ready(html):
            break
    return html


def page_texts(browser: str, url: str, profile: Path, expected: set[str]) -> list[str]:
    html = page(browser, url, profile, lambda h: expected <= set(texts_of(h)))
    return texts_of(html)


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def timeline_run_chunks(html: str, job: str) -> int:
    """Run bars in the Overview timeline row of `job` (RunTimeline renders one row per job: its link, then chunks)."""
    row = html.split(f'href="/locations/{LOCATION}/jobs/{job}"', 1)
    if len(row) < 2:
        return 0
    rest = row[1].split(f'href="/locations/{LOCATION}/jobs/', 1)[0]  # up to the next job's row
    return len(re.findall(r'class="RunTimeline_runChunk__', rest))


# ------------------------------------------------------------------------------------------------------- the tests


def test_make_run_shows_on_the_overview_timeline_and_the_job_page(
    browser: str, dagster: Dagster, runs: Runs, session: Session
) -> None:
    profile = session.root / "chromium"
    html = page(
        browser,
        f"{dagster.url}/overview/activity/timeline",
        profile,
        lambda h: timeline_run_chunks(h, "default_pipeline") > 0,
        screenshot=session.shots / "timeline.png",
    )
    assert timeline_run_chunks(html, "default_pipeline") >= 1, (
        f"no run of default_pipeline on the Overview timeline; it shows: {texts_of(html)[:120]}"
    )
    # The job's page lists both `make run` runs (the UI shows a run id's first 8 characters).
    ids = {runs.first[:8], runs.second[:8]}
    texts = page_texts(browser, f"{dagster.url}/locations/{LOCATION}/jobs/default_pipeline/runs", profile, ids)
    assert ids <= set(texts), f"job page does not list runs {ids}; it shows: {texts[:120]}"
    assert "make run" in texts  # the tag the launcher sets
    # The automation sensor runs, so the job page's automation tag must not say it is off.
    assert "Auto-materialize on" in texts and "Auto-materialize off" not in texts


def test_every_group_page_shows_its_assets(browser: str, dagster: Dagster, runs: Runs, session: Session) -> None:
    repo = session.definitions().get_repository_def()
    by_group: dict[str, set[str]] = {}
    for key in repo.asset_graph.get_all_asset_keys():
        by_group.setdefault(repo.asset_graph.get(key).group_name, set()).add(key.path[-1])
    models = load_registry(session.models).names
    assert set(by_group) == {"corpus", "retrieval", *models}
    for group, names in sorted(by_group.items()):
        texts = page_texts(
            browser, f"{dagster.url}/locations/{LOCATION}/asset-groups/{group}", session.root / "c", names
        )
        missing = sorted(names - set(texts))
        assert not missing, f"group {group} page does not show {missing}; it shows: {texts[:150]}"
        assert group in texts


def test_an_exports_checks_show_what_they_judged(browser: str, dagster: Dagster, runs: Runs, session: Session) -> None:
    nodes = dagster.graphql(
        "{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name description "
        "executionForLatestMaterialization { status evaluation { description } } } } } } }"
    )["assetNodes"]
    checks = {
        (" / ".join(n["assetKey"]["path"]), c["name"]): c
        for n in nodes
        for c in (n["assetChecksOrError"].get("checks") or [])
    }
    # Every check of the run returned a description saying what it judged (not only "Passed").
    undescribed = sorted(
        k
        for k, c in checks.items()
        if not ((c["executionForLatestMaterialization"] or {}).get("evaluation") or {}).get("description")
    )
    assert not undescribed, f"checks whose latest result has no description: {undescribed}"
    for model in load_registry(session.models).names:
        export_checks = {name: c for (asset, name), c in checks.items() if asset == f"{model} / export"}
        if not export_checks:
            continue  # chat exports have no parity check
        html = page(
            browser,
            f"{dagster.url}/assets/{model}/export?view=checks",
            session.root / "chromium",
            lambda h, names=tuple(export_checks): all(n in texts_of(h) for n in names),
            screenshot=session.shots / f"{model}-export-checks.png",
        )
        shown = normalized(" ".join(texts_of(html)))
        for name, check in export_checks.items():
            result = check["executionForLatestMaterialization"]["evaluation"]["description"]
            assert name in texts_of(html)
            assert normalized(result) in shown, f"{model}/export:{name}: {result!r} not on the page: {shown[:2000]}"
            assert normalized(check["description"]) in shown  # what the check is, beside what it found


def test_a_no_op_second_make_run_triggers_nothing_downstream(dagster: Dagster, runs: Runs, session: Session) -> None:
    with session.instance() as instance:
        second = materializations(instance, runs.second)
        assert instance.get_run_by_id(runs.second).status == dg.DagsterRunStatus.SUCCESS
        # Nothing new to do: every asset's content (hence its data version) is what the first run made.
        assert data_versions(instance, runs.second) == data_versions(instance, runs.first)
    meta = {k: {n: v.value for n, v in m.metadata.items()} for k, m in second.items()}
    assert meta["all_minilm_l6_v2/corpus_embeddings"]["chunks_encoded"] == 0
    assert meta["splade_tiny/sparse_index"]["chunks_encoded"] == 0
    for model in load_registry(session.models).names:
        assert meta[f"{model}/publish"]["new_commit"] is False
    # Dagster's own automation evaluation, on this instance, since the first run: nothing to request.
    assert runs.after_second.total_requested == 0
    # ... and nothing is stale in the UI.
    nodes = dagster.graphql("{ assetNodes { assetKey { path } staleStatus staleCauses { reason } } }")["assetNodes"]
    stale = {"/".join(n["assetKey"]["path"]): n["staleCauses"] for n in nodes if n["staleStatus"] != "FRESH"}
    assert not stale, f"stale after a no-op re-run: {stale}"


def test_rereading_an_unchanged_corpus_triggers_nothing_downstream(
    dagster: Dagster, runs: Runs, session: Session
) -> None:
    # Materialize ["corpus"] as the UI's Materialize button does: the implicit asset job, an asset subset, no config.
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
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
    status = dagster.wait_for_run(run_id)
    assert status == "SUCCESS", f"corpus run {run_id} ended {status}:\n{dagster.log_tail()}"
    with session.instance() as instance:
        ended = instance.get_run_record_by_id(run_id).end_time
        after = dg.evaluate_automation_conditions(
            defs=session.definitions(), instance=instance, cursor=runs.after_second.cursor
        )
    assert after.total_requested == 0  # the same corpus (same fingerprint): embeddings and eval stay as they are

    # The daemon's running automation sensor agrees: its ticks since then requested nothing.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ticks = dagster.automation_ticks()
        if any(t["timestamp"] > ended and t["status"] in ("SKIPPED", "SUCCESS") for t in ticks):
            break
        time.sleep(5)
    else:
        pytest.fail(f"the automation sensor did not tick within 180 s of the corpus run:\n{dagster.log_tail()}")
    assert [t for t in ticks if t["runIds"]] == [], "the automation sensor launched runs"
    with session.instance() as instance:
        assert {r.run_id for r in instance.get_runs()} == {runs.first, runs.second, run_id}


def test_the_catalog_shows_every_asset_check_and_automation(
    browser: str, dagster: Dagster, runs: Runs, session: Session
) -> None:
    repo = session.definitions().get_repository_def()
    asset_keys = {tuple(k.path) for k in repo.asset_graph.get_all_asset_keys()}
    check_keys = {(tuple(k.asset_key.path), k.name) for k in repo.asset_graph.asset_check_keys}
    labels = {" / ".join(path) for path in asset_keys}
    texts = page_texts(browser, f"{dagster.url}/assets", session.root / "chromium", labels)
    missing = sorted(labels - set(texts))
    assert not missing, f"asset catalog does not show {missing}; it shows: {texts[:200]}"
    corpus_row = texts.index("corpus")
    assert "Materialized" in texts[corpus_row : corpus_row + 10], texts[corpus_row : corpus_row + 10]

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

    # Sensors and schedules on the Automation page; only the automation and dead-run sensors run by default.
    automation = {s.name for s in repo.sensor_defs} | {s.name for s in repo.schedule_defs}
    texts = page_texts(browser, f"{dagster.url}/automation", session.root / "chromium", automation)
    assert not automation - set(texts), f"automation page does not show {sorted(automation - set(texts))}"
    states = dagster.graphql(
        "query($s: RepositorySelector!) { repositoryOrError(repositorySelector: $s) { ... on Repository { "
        "sensors { name sensorState { status } } schedules { name executionTimezone } } } }",
        {"s": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}},
    )["repositoryOrError"]
    running = {s["name"] for s in states["sensors"] if s["sensorState"]["status"] == "RUNNING"}
    assert running == {"default_automation_sensor", "dead_run_sensor"}
    assert {s["executionTimezone"] for s in states["schedules"]} == {"UTC"}


def test_reloading_with_an_invalid_models_yaml_keeps_every_asset_and_sensor(
    dagster: Dagster, runs: Runs, session: Session
) -> None:
    def loaded() -> tuple[set[tuple[str, str]], set[str]]:
        nodes = dagster.graphql("{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
        assets = {("/".join(n["assetKey"]["path"]), n["groupName"]) for n in nodes}
        sensors = dagster.graphql(
            "query($s: RepositorySelector!) { repositoryOrError(repositorySelector: $s) { ... on Repository { "
            "sensors { name } } } }",
            {"s": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}},
        )["repositoryOrError"]["sensors"]
        return assets, {s["name"] for s in sensors}

    def reload() -> None:
        result = dagster.graphql(
            "mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }",
            {"name": LOCATION},
        )["reloadRepositoryLocation"]
        assert result["__typename"] == "WorkspaceLocationEntry", result
        assert dagster.wait_until_loaded() == LOCATION

    before = loaded()
    valid = session.models.read_text()
    session.models.write_text(valid.replace("kind: sparse", "kind: sparce"))
    try:
        reload()
        entries = dagster.location_entries()
        assert [e["locationOrLoadError"]["__typename"] for e in entries] == ["RepositoryLocation"]
        assert loaded() == before  # every asset (in its group) and every sensor, automation included
        assert "default_automation_sensor" in before[1] and len(before[0]) > 10
    finally:
        session.models.write_text(valid)
        reload()
    assert loaded() == before


def test_the_published_repo_page_opens_from_the_recorded_repo_url(
    browser: str, dagster: Dagster, runs: Runs, session: Session, hub
) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url)
    with session.instance() as instance:
        for model in load_registry(session.models).names:
            event = instance.get_latest_materialization_event(dg.AssetKey([model, "publish"]))
            meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            url, repo_id = meta["repo_url"], meta["repo_id"]
            # The publish asset's page links the repo where the metadata says...
            html = page(
                browser, f"{dagster.url}/assets/{model}/publish", session.root / "chromium", lambda h, u=url: u in h
            )
            assert f'href="{url}"' in html, f"{model}/publish does not link {url}"
            # ... and the link opens the repo's page: its card, files with sizes, commits and tags.
            html = page(
                browser,
                url,
                session.root / "chromium",
                lambda h: 'id="repo-id"' in h,
                screenshot=session.shots / f"{model}-hub-repo.png",
            )
            texts = texts_of(html)
            assert repo_id in texts, f"{url} does not show {repo_id}: {texts[:60]}"
            files = set(api.list_repo_files(repo_id))
            shown = set(re.findall(r'data-path="([^"]+)"', html))
            assert files == shown, f"{url}: files {sorted(files ^ shown)} differ"
            assert "README.md" in shown and re.search(r'data-bytes="\d+"', html)
            tags = {t.name for t in api.list_repo_refs(repo_id).tags}
            assert meta["tag"] in tags and tags <= set(re.findall(r'data-tag="([^"]+)"', html))
            commits = {c.commit_id for c in api.list_repo_commits(repo_id)}
            assert meta["commit_sha"] in commits and meta["commit_sha"] in set(re.findall(r'data-sha="([^"]+)"', html))
            assert "Model card" in texts
