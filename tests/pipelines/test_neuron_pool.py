"""Every step that runs a model sits in the `neuron` pool and leases its cores through the `neuron` resource.

Found from the code, not listed by hand: a step whose body loads a model (an encoder, a causal LM, the parity check, a
Searcher) must declare pool="neuron" and require the resource, or it would take every free core on a Neuron host.
"""

from __future__ import annotations

import inspect
import re

from pipelines.definitions import defs

LOADS_A_MODEL = re.compile(r"\b(load_encoder|load_causal_lm|load_generator|parity|Searcher|encode_stage_shards)\(")
# A lease in the body, or encode_stage_shards (assets/common.py), which leases for the data-parallel replicas.
LEASES = re.compile(r"\.lease\(|\bencode_stage_shards\(")


def test_model_steps_are_in_the_neuron_pool_and_lease():
    job = defs.resolve_job_def("default_pipeline")
    model_steps, offenders = [], []
    for node in job.graph.node_defs:
        source = inspect.getsource(node.compute_fn.decorated_fn)
        if not LOADS_A_MODEL.search(source):
            continue
        model_steps.append(node.name)
        if node.pool != "neuron" or "neuron" not in node.required_resource_keys or not LEASES.search(source):
            offenders.append(f"{node.name}: pool={node.pool}, resources={sorted(node.required_resource_keys)}")
    assert not offenders, "model steps outside the neuron pool or without a lease:\n" + "\n".join(offenders)
    # The scan found the steps it must find (so the rule above is not vacuous).
    for step in ("export_matches_reference", "retrieval_eval", "corpus_embeddings", "sparse_index", "chat_smoke_eval"):
        assert any(name.endswith(step) for name in model_steps), (step, model_steps)
