"""NeuronCore (or GPU) leases for every step that runs a model, as the Dagster resource "neuron".

The logic lives in `neuronforge.devices` (discovery rules, flock leases); this resource is its configuration. Lease
before anything imports torch_neuronx / optimum.neuron in the step process: the runtime reads NEURON_RT_VISIBLE_CORES
once, and reserves every core it can see until the process exits, so a lease (scope="process") lasts that long too.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import dagster as dg
from pydantic import ValidationInfo, field_validator

from neuronforge.devices import CoreAllocator, CoreLease, HostInventory, check_setting


class NeuronResource(dg.ConfigurableResource):
    """Owns NeuronCore (or GPU) allocation for every step that runs a model.

    Discovery, first rule that finds cores wins:
    1. the cores of an enclosing lease (a nested lease, or a child process of a lease holder) are shared;
    2. `total_cores` from config;
    3. NEURON_RT_VISIBLE_CORES set by the environment (EKS Neuron device plugin): exactly those cores, nothing more;
    4. `neuron-ls --output-format json`, then `neuron-ls --json-output` (older SDKs), leaving out cores used by
       processes outside neuronforge leases;
    5. /dev/neuron* devices × cores per chip (2 on inf2/trn1; on trn2 8 // NEURON_LOGICAL_NC_CONFIG, 4 at the default).
    With device="auto" a host where none of these finds cores falls back to CUDA GPUs, then to a CPU slot.
    """

    total_cores: int | None = None  # explicit NeuronCore count (tests, unusual hosts); selects neuron under "auto"
    # Default: NEURONFORGE_LOCK_DIR, else /run/lock/neuronforge, else /tmp/neuronforge-locks: node-local, shared by
    # every process of the host, never a network filesystem (refused).
    lock_dir: str | None = None
    wait_timeout_s: float = 3600.0
    poll_interval_s: float = 0.5
    device: str = "auto"  # "auto" | "neuron" | "cuda" | "cpu"
    instance_type: str | None = None  # e.g. "inf2.48xlarge"; default: read from DMI (no network); for validation

    @field_validator("device", "total_cores", "wait_timeout_s", "poll_interval_s")
    @classmethod
    def _valid(cls, value: Any, info: ValidationInfo) -> Any:
        return check_setting(info.field_name, value)

    def allocator(self) -> CoreAllocator:
        return CoreAllocator(
            total_cores=self.total_cores,
            lock_dir=self.lock_dir,
            wait_timeout_s=self.wait_timeout_s,
            poll_interval_s=self.poll_interval_s,
            device=self.device,
            instance_type=self.instance_type,
        )

    def discover(self) -> HostInventory:
        """The devices a lease would draw from now, and which discovery rule found them."""
        return self.allocator().discover()

    def lease(
        self,
        cores: int,
        *,
        holder: str,
        log: logging.Logger | None = None,
        scope: str = "process",
        up_to: int | None = None,
    ) -> contextlib.AbstractContextManager[CoreLease]:
        """Hold `cores` contiguous cores (or GPUs, or a CPU slot): Neuron cores until this process exits
        (scope="process"), or for the body's child processes only (scope="children"); see CoreAllocator.lease."""
        return self.allocator().lease(cores, holder=holder, log=log, scope=scope, up_to=up_to)
