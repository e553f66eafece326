"""NeuronResource, the Dagster resource over neuronforge.devices: its config validation, and a lease inside an asset."""

from __future__ import annotations

import os
import types

import dagster as dg
import pytest

from neuronforge.devices import (
    NEURON_ENV,
)
from resources.devices import NeuronResource


def test_config_is_validated() -> None:
    for bad in ({"device": "tpu"}, {"total_cores": 0}, {"wait_timeout_s": -1}, {"poll_interval_s": 0}):
        with pytest.raises(Exception, match=next(iter(bad))):
            NeuronResource(**bad)


def test_resource_in_an_asset(host: types.SimpleNamespace) -> None:
    @dg.asset
    def compiled(neuron: NeuronResource) -> dg.MaterializeResult:
        with neuron.lease(2, holder="compiled") as lease:
            assert os.environ[NEURON_ENV] == "0-1"
            return dg.MaterializeResult(metadata=lease.metadata())

    result = dg.materialize(
        [compiled], resources={"neuron": NeuronResource(total_cores=24, lock_dir=host.locks)}, raise_on_error=True
    )
    (event,) = result.asset_materializations_for_node("compiled")
    assert event.metadata["cores_leased"].value == "0-1" and event.metadata["core_count"].value == 2
    assert NEURON_ENV not in os.environ
