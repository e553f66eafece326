"""The published repo's web page, opened in headless Chromium at the `repo_url` the publish asset records.

The artifact goes to the embedded hub exactly as the pipeline publishes it (HubResource without an endpoint starts
the detached server on its port); Chromium takes a screenshot and dumps the DOM, and the test asserts on both.
Chromium is Debian's `chromium` package (.ci/run installs it): missing, the test fails in CI and is skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from headless_chromium import HEADLESS_FLAGS, chromium_binary

pytestmark = [pytest.mark.ui]

REPO = Path(__file__).resolve().parents[2]
WINDOW = (1280, 1800)


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        browser,
        *HEADLESS_FLAGS,
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


class Dom(HTMLParser):
    """Text per element id, and the data-* attributes of rows, from Chromium's serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.data: list[dict[str, str | None]] = []
        self._ids: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if any(k.startswith("data-") for k in found):
            self.data.append({"tag": tag, **found})
        if tag not in ("meta", "br", "img", "hr", "link", "input"):
            self._ids.append((tag, found.get("id")))
            if found.get("id"):
                self.text.setdefault(found["id"], "")

    def handle_endtag(self, tag: str) -> None:
        while self._ids and self._ids.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, element_id in self._ids:
            if element_id:
                self.text[element_id] += data


def test_published_repo_page_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    browser = chromium_binary()
    sys.path.insert(0, str(REPO / "tests" / "unit" / "hub"))
    from test_publish import make_artifact

    from assets.publish import publish_metadata
    from neuronforge.hub.daemon import stop
    from neuronforge.hub.page import format_size
    from resources.hub import HubResource

    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    artifact = make_artifact(tmp_path / "art")
    try:
        result = HubResource(backoff_s=0.01).publish(artifact, model_name="all-MiniLM-L6-v2")
        repo_url = publish_metadata(result)["repo_url"].url  # what the publish asset records

        shot = tmp_path / "repo-page.png"
        run_chromium(browser, tmp_path / "profile", f"--screenshot={shot}", repo_url)
        dom_html = run_chromium(browser, tmp_path / "profile", "--dump-dom", repo_url).stdout.decode()
    finally:
        stop(tmp_path / "home" / "hub")

    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == WINDOW
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) blank"

    dom = Dom()
    dom.feed(dom_html)
    assert dom.text["repo-id"] == result.repo_id
    assert dom.text["commit-sha"] == result.commit_sha
    assert "all-MiniLM-L6-v2" in dom.text["card"] and "ort.InferenceSession" in dom.text["card"]  # the rendered card
    manifest = json.loads((artifact / "manifest.json").read_text())
    sizes: dict[str, int] = {}  # path → the byte count its row shows (each file row, then its size cell)
    for row in dom.data:
        if row["tag"] == "tr":
            path = str(row["data-path"])
        elif row["tag"] == "td":
            sizes[path] = int(str(row["data-bytes"]))
    local = {name: (artifact / name).stat().st_size for name in [*manifest["files"], "manifest.json"]}
    assert set(sizes) == {*local, "README.md", ".gitattributes"} and local.items() <= sizes.items()
    assert format_size(local["model.onnx.data"]) in dom.text["files"]  # as a person reads it: "1.0 MB"
    commits = [row["data-sha"] for row in dom.data if "data-sha" in row]
    assert commits[0] == result.commit_sha and f"Publish all-MiniLM-L6-v2 (onnx, {result.tag})" in dom.text["commits"]
    assert [row["data-tag"] for row in dom.data if "data-tag" in row] == [result.tag]
    assert result.commit_sha[:12] in dom.text["tags"]
