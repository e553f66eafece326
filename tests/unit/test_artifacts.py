import pytest

from neuronforge.artifacts import (
    ManifestError,
    atomic_dir,
    compile_key,
    read_manifest,
    verify_manifest,
    write_manifest,
)

BASE = dict(
    model_id="builtin:x",
    revision="abc",
    backend="onnx",
    shapes={"batch_size": 8, "sequence_length": 64},
    options={"quantize": "none"},
    toolchain={"torch": "2.13.0"},
)


def test_compile_key_changes_with_everything_that_changes_the_binary():
    key = compile_key(**BASE)
    assert key == compile_key(**{**BASE, "shapes": {"sequence_length": 64, "batch_size": 8}})  # order-free
    for field, value in [
        ("revision", "def"),
        ("backend", "neuron"),
        ("shapes", {"batch_size": 4, "sequence_length": 64}),
        ("options", {"quantize": "int8"}),
        ("toolchain", {"torch": "2.14.0"}),
    ]:
        assert compile_key(**{**BASE, field: value}) != key, field


def test_manifest_roundtrip_and_tamper_detection(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vocab.txt").write_text("a\nb\n")
    manifest = write_manifest(tmp_path, {"backend": "onnx"})
    assert set(manifest["files"]) == {"model.onnx", "sub/vocab.txt"}
    assert verify_manifest(tmp_path)["backend"] == "onnx"

    (tmp_path / "model.onnx").write_bytes(b"graph!")
    with pytest.raises(ManifestError, match=r"altered=\['model.onnx'\]"):
        verify_manifest(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "extra.bin").write_bytes(b"x")
    with pytest.raises(ManifestError, match=r"extra=\['extra.bin'\]"):
        verify_manifest(tmp_path)
    (tmp_path / "extra.bin").unlink()
    (tmp_path / "README.md").write_text("model card")  # a Hub repo's own files are allowed beside an artifact
    (tmp_path / ".gitattributes").write_text("*.onnx filter=lfs")
    verify_manifest(tmp_path)
    (tmp_path / "sub" / "vocab.txt").unlink()
    with pytest.raises(ManifestError, match=r"missing=\['sub/vocab.txt'\]"):
        verify_manifest(tmp_path)


def test_read_manifest_of_a_plain_folder(tmp_path):
    with pytest.raises(ManifestError, match="not a neuronforge artifact"):
        read_manifest(tmp_path)


def test_atomic_dir_keeps_previous_version_on_failure(tmp_path):
    final = tmp_path / "artifact"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash mid-export")
    assert (final / "a").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no temporary left behind
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("v2")
    assert (final / "a").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]
