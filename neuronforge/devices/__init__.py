"""NeuronCores (or GPUs, or a CPU slot) for the processes that run models: discovery and crash-safe leases.

neuron_ls   parsing and formatting: core-id specs, `neuron-ls` JSON (both formats), devices and their processes
discovery   which devices this host has and which rule found them (config, preset env, neuron-ls, /dev, CUDA, CPU)
leases      flock-based leases of contiguous core ranges, exported as NEURON_RT_VISIBLE_CORES / CUDA_VISIBLE_DEVICES
"""

from neuronforge.devices.discovery import (
    CUDA_ENV,
    DEVICES,
    INSTANCE_CORES,
    LEASE_MARKER_ENV,
    NEURON_ENV,
    CoreLeaseError,
    HostInventory,
    NeuronDiscoveryError,
    discover,
)
from neuronforge.devices.leases import (
    CoreAllocator,
    CoreLease,
    CoreLeaseTimeout,
    CoreRequestTooLarge,
    check_setting,
)
from neuronforge.devices.neuron_ls import (
    NeuronDevice,
    NeuronLsReport,
    NeuronProcess,
    contiguous_runs,
    cores_per_chip,
    format_core_ids,
    format_core_range,
    parse_core_spec,
    parse_neuron_ls,
    parse_neuron_ls_report,
)

__all__ = [
    "CUDA_ENV",
    "DEVICES",
    "INSTANCE_CORES",
    "LEASE_MARKER_ENV",
    "NEURON_ENV",
    "CoreAllocator",
    "CoreLease",
    "CoreLeaseError",
    "CoreLeaseTimeout",
    "CoreRequestTooLarge",
    "HostInventory",
    "NeuronDevice",
    "NeuronDiscoveryError",
    "NeuronLsReport",
    "NeuronProcess",
    "check_setting",
    "contiguous_runs",
    "cores_per_chip",
    "discover",
    "format_core_ids",
    "format_core_range",
    "parse_core_spec",
    "parse_neuron_ls",
    "parse_neuron_ls_report",
]
