"""Example code location for Kubernetes (EKS with inf2/trn1 nodes): one pod per step via dagster-k8s.

Not imported by the project or its tests (dagster-k8s is not a dependency). To use it, build an image of this repository
with `pip install dagster-k8s` added, and point the user-code deployment at this module:

    dagster api grpc -m deploy.k8s.definitions_k8s ...     (Helm: dagster-user-deployments[].dagsterApiGrpcArgs)

Every step that runs a model (the assets in pool "neuron": export, corpus_embeddings, sparse_index, chat_smoke_eval)
requests `aws.amazon.com/neuroncore` from the Neuron device plugin. The plugin then gives the pod exactly those cores
and sets NEURON_RT_VISIBLE_CORES; NeuronResource sees the preset variable and uses those cores as they are instead of
leasing its own (a second allocation on top of the plugin's would fight over cores it does not own). See
docs/operations.md.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_k8s import k8s_job_executor

from neuronforge.registry import ModelSpec, load_registry
from pipelines.definitions import build_definitions, registry_path

NEURON_RESOURCE = "aws.amazon.com/neuroncore"
NEURON_POOL = "neuron"


def neuron_k8s_config(cores: int, *, memory: str = "16Gi") -> dict[str, Any]:
    """dagster-k8s step configuration for a step that needs `cores` NeuronCores (one contiguous range)."""
    return {
        "container_config": {
            "resources": {
                # Extended resources are requested and limited alike; the device plugin allocates whole cores.
                "requests": {NEURON_RESOURCE: str(cores), "cpu": "2", "memory": memory},
                "limits": {NEURON_RESOURCE: str(cores), "memory": memory},
            },
        },
        "pod_spec_config": {
            # Neuron node groups are usually tainted so that only pods asking for NeuronCores land there.
            "tolerations": [{"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def neuron_op_tags(spec: ModelSpec) -> dict[str, Any]:
    """The same request as op tags, for assets that take `op_tags=` (`@dg.asset(op_tags=neuron_op_tags(spec))`):
    the k8s executor reads `dagster-k8s/config` from each step's op tags."""
    return {"dagster-k8s/config": neuron_k8s_config(spec.tensor_parallel_size)}


def per_step_neuron_config(defs: dg.Definitions) -> dict[str, dict[str, Any]]:
    """`per_step_k8s_config` (op name → config) for every Neuron step, sized by the model's tensor_parallel_size.

    The executor merges it over the op tags, so the asset modules stay free of Kubernetes settings.
    """
    registry = load_registry(registry_path())
    config = {}
    for assets_def in defs.assets or []:
        if not isinstance(assets_def, dg.AssetsDefinition) or getattr(assets_def.node_def, "pool", None) != NEURON_POOL:
            continue
        model = next(iter(assets_def.keys)).path[0]
        config[assets_def.node_def.name] = neuron_k8s_config(registry.get(model).tensor_parallel_size)
    return config


def build_k8s_definitions() -> dg.Definitions:
    base = build_definitions()
    executor = k8s_job_executor.configured(
        {
            "job_namespace": {"env": "DAGSTER_K8S_NAMESPACE"},
            # Steps run in separate pods: artifacts, stage records and shards live on one ReadWriteMany volume (e.g. EFS).
            "env_vars": ["NEURONFORGE_HOME=/data/neuronforge", "HF_HUB_DISABLE_XET=1"],
            "env_secrets": ["neuronforge-hf-token"],  # a Secret with HF_TOKEN
            "volumes": [
                {"name": "neuronforge-data", "persistent_volume_claim": {"claim_name": "neuronforge-data"}},
            ],
            "volume_mounts": [{"name": "neuronforge-data", "mount_path": "/data/neuronforge"}],
            "step_k8s_config": {
                "container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}}},
            },
            "per_step_k8s_config": per_step_neuron_config(base),
        }
    )
    return dg.Definitions.merge(base, dg.Definitions(executor=executor))


defs = build_k8s_definitions()
