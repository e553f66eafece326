"""NeuronCores (or GPUs, or a CPU slot) for the processes that run models: discovery and crash-safe leases.

neuron_ls   parsing and formatting: core-id specs, `neuron-ls` JSON (both formats), devices and their processes
discovery   which devices this host has and which rule found them (config, preset env, neuron-ls, /dev, CUDA, CPU)
leases      leases of contiguous core ranges, exported as NEURON_RT_VISIBLE_CORES / CUDA_VISIBLE_DEVICES, that last
            as long as the Neuron runtime holds the cores (until the process exits), or for child processes only
core_locks  the per-core flock files behind a lease and the holder records others read
lock_dir    the node-local lock directory (never a network filesystem)
simulated_runtime  a stand-in for the Neuron runtime's core reservation (tests, the bench's simulated host)
"""

from neuronforge.devices.discovery import (
    CUDA_ENV,
    DEVICES,
    INSTANCE_CORES,
    LEASE_MARKER_ENV,
    LNC_ENV,
    NEURON_ENV,
    NUM_CORES_ENV,
    CoreLeaseError,
    HostInventory,
    NeuronDiscoveryError,
    discover,
    logical_nc_config,
    neuron_device_count,
)
from neuronforge.devices.leases import (
    CoreAllocator,
    CoreLease,
    CoreLeaseTimeout,
    CoreRequestTooLarge,
    check_setting,
    end_process_leases,
)
from neuronforge.devices.lock_dir import LOCK_DIR_ENV, LockDirError, default_lock_dir
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
    "LNC_ENV",
    "LOCK_DIR_ENV",
    "NEURON_ENV",
    "NUM_CORES_ENV",
    "CoreAllocator",
    "CoreLease",
    "CoreLeaseError",
    "CoreLeaseTimeout",
    "CoreRequestTooLarge",
    "HostInventory",
    "LockDirError",
    "NeuronDevice",
    "NeuronDiscoveryError",
    "NeuronLsReport",
    "NeuronProcess",
    "check_setting",
    "contiguous_runs",
    "cores_per_chip",
    "default_lock_dir",
    "discover",
    "end_process_leases",
    "format_core_ids",
    "format_core_range",
    "logical_nc_config",
    "neuron_device_count",
    "parse_core_spec",
    "parse_neuron_ls",
    "parse_neuron_ls_report",
]
