"""Whole-pipeline fixtures: a loopback Hub per test module, and the stand-in Neuron SDK (tests/neuron_stub.py)."""

from __future__ import annotations

import pytest
from neuron_stub import neuron_sdk_stub, stub_root  # noqa: F401  (pytest fixtures)

from neuronforge.hub import HubServer


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> HubServer:
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server
