"""Hub test fixtures: a real server on 127.0.0.1 with an ephemeral port over a tmp data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_testing import TOKEN
from huggingface_hub import constants
from huggingface_hub.utils import reset_sessions

from neuronforge.hub import HubServer


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # HF_HUB_OFFLINE=1 would block loopback too; these tests never leave 127.0.0.1.
    if constants.HF_HUB_OFFLINE:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        reset_sessions()
    yield
    reset_sessions()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "root" / "hub") as srv:
        yield srv


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "root" / "hub", token=TOKEN) as srv:
        yield srv
