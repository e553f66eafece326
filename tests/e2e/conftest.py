"""Whole-pipeline fixtures: a loopback Hub per test module."""

from __future__ import annotations

import pytest

from neuronforge.hub import HubServer


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> HubServer:
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server
