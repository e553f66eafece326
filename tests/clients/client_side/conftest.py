"""The client venv's view: the repos tests/clients/publish_repos.py published, on the Hub HF_ENDPOINT names.

Nothing here imports neuronforge (it is not installed in this venv): the published repos must stand on their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

TEXTS = ["The Eiffel Tower is in Paris.", "Inferentia2 runs compiled graphs.", "a " * 40 + "longer text", "x"]


@pytest.fixture(scope="session")
def published() -> dict[str, Any]:
    path = os.environ.get("NEURONFORGE_CLIENT_REPOS")
    if not path or not Path(path).is_file():
        # Not a skip: a client check that could not run has not passed.
        pytest.fail("NEURONFORGE_CLIENT_REPOS names no repos.json: run these tests through `make test-clients`")
    data = json.loads(Path(path).read_text())
    assert os.environ.get("HF_ENDPOINT") == data["endpoint"]
    return data


def repo_of(published: dict[str, Any], kind: str) -> dict[str, str]:
    found = [r for r in published["repos"].values() if r["kind"] == kind]
    assert found, f"no {kind} repo was published"
    return found[0]


@pytest.fixture(scope="session")
def dense(published):
    return repo_of(published, "dense")


@pytest.fixture(scope="session")
def sparse(published):
    return repo_of(published, "sparse")


@pytest.fixture(scope="session")
def chat(published):
    return repo_of(published, "chat")
