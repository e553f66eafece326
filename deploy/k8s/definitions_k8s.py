"""Code location for Kubernetes (EKS with inf2/trn1 nodes): the normal definitions, one pod per step (dagster-k8s).

Needs requirements-fleet.txt (dagster-k8s, dagster-postgres) in the image; tests/fleet/test_k8s_definitions.py loads
and validates this module in CI (`make test-fleet`). Point the user-code deployment at it:

    dagster api grpc -m deploy.k8s.definitions_k8s ...     (Helm: dagster-user-deployments[].dagsterApiGrpcArgs)

Every step that runs a model (the steps in pool "neuron": export, its matches_reference check, corpus_embeddings,
sparse_index, chat_smoke_eval, retrieval_eval) requests `aws.amazon.com/neuroncore` from the Neuron device plugin,
as many as the step leases (`step_cores`). The plugin gives the pod exactly those cores and sets
NEURON_RT_VISIBLE_CORES; NeuronResource sees the preset variable and uses those cores as they are instead of leasing
its own (a second allocation on top of the plugin's would fight over cores it does not own). See docs/operations.md.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_k8s import k8s_job_executor

from neuronforge.registry import ModelSpec, Registry
from pipelines.definitions import build_definitions, load_models

NEURON_RESOURCE = "aws.amazon.com/neuroncore"
NEURON_POOL = "neuron"
# Backends that run on the NeuronCores of an inf2/trn1 node (`auto` resolves to neuron there). A model pinned to
# onnx or torch runs on the pod's CPUs and asks for no cores.
NEURON_BACKENDS = ("auto", "neuron")
CORPUS_STAGES = ("corpus_embeddings", "sparse_index")


def stage_cores(spec: ModelSpec, stage: str) -> int:
    """NeuronCores the `stage` step of `spec` leases on a Neuron node (assets/common.cores_needed for a Neuron
    artifact), so the pod asks the device plugin for exactly these.

    Corpus stages run `data_parallel` replicas of tensor_parallel_size cores each (neuronforge/data_parallel.py); with
    a preset the lease takes exactly the pod's cores, so `data_parallel: N` asks for N replicas' cores and `auto` for
    one replica: on a fleet the corpus stages scale out by partition (one pod per partition), not by pod size.
    """
    if spec.backend not in NEURON_BACKENDS:
        return 0
    if stage in CORPUS_STAGES and spec.data_parallel != "auto":
        return int(spec.data_parallel) * spec.tensor_parallel_size
    return spec.tensor_parallel_size


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


def neuron_step_cores(defs: dg.Definitions, registry: Registry) -> dict[str, int]:
    """Op name → NeuronCores, for every step in pool `neuron` (assets and asset checks alike: an @asset_check is its
    own op, hence its own step and pod)."""
    models = {spec.name: spec for spec in registry.models}
    retrieval = [spec for spec in registry.models if spec.kind in ("dense", "sparse")]
    cores: dict[str, int] = {}
    for node in [*(defs.assets or []), *(defs.asset_checks or [])]:
        if not isinstance(node, dg.AssetsDefinition) or getattr(node.node_def, "pool", None) != NEURON_POOL:
            continue
        if isinstance(node, dg.AssetChecksDefinition):
            # A check loads its asset's model once (one replica), whatever the asset's own step leases.
            targets = [(check.asset_key, "export") for check in node.check_keys]
        else:
            targets = [(key, key.path[-1]) for key in node.keys]
        needs = []
        for key, stage in targets:
            if key == dg.AssetKey("retrieval_eval"):
                # One process loads every retrieval model: a lease as large as the largest of them.
                needs += [stage_cores(spec, "export") for spec in retrieval]
            elif key.path[0] in models:
                needs.append(stage_cores(models[key.path[0]], stage))
            else:
                raise ValueError(
                    f"{node.node_def.name} is in pool {NEURON_POOL!r} but deploy/k8s/definitions_k8s.py does not "
                    f"know how many NeuronCores it needs (asset {key.to_user_string()}): add it to neuron_step_cores"
                )
        cores[node.node_def.name] = max(needs, default=0)
    return cores


def per_step_neuron_config(defs: dg.Definitions, registry: Registry) -> dict[str, dict[str, Any]]:
    """`per_step_k8s_config` (op name → config) for every step that needs NeuronCores. The executor deep-merges it over
    `step_k8s_config` and the op tags, so the asset modules stay free of Kubernetes settings."""
    return {op: neuron_k8s_config(n) for op, n in neuron_step_cores(defs, registry).items() if n > 0}


def build_k8s_definitions(registry: Registry | None = None, resources: dict[str, object] | None = None):
    registry = registry or load_models()
    # One run (one pod per step) per corpus partition in a backfill: the corpus stages fan out over the fleet.
    base = build_definitions(registry, resources, corpus_backfill=dg.BackfillPolicy.multi_run(1))
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
            "per_step_k8s_config": per_step_neuron_config(base, registry),
        }
    )
    return dg.Definitions.merge(base, dg.Definitions(executor=executor))


defs = build_k8s_definitions()
