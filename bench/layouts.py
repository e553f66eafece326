"""Which ONNX graph our dense backend should run: the published sentence-transformers layout (`onnx/model.onnx`,
TorchScript export, plain ONNX ops) against the graph neuronforge used to ship (the pooled head exported by dynamo and
rewritten by onnxscript into onnxruntime's fused MultiHeadAttention / SkipLayerNormalization / BiasGelu kernels).

Same runner (buckets, sub-batches), same chunks, alternated rounds: the ratio is fused-graph time / published-graph
time, so >= 1 means the published graph is at least as fast. The row is what justifies shipping one graph only: if
the fused graph came back faster by more than the target's margin, it would earn its place beside the standard one.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.context import DENSE_MODEL, LOG, BenchContext
from bench.harness import Row, alternate, paired_ratio
from neuronforge.parity import row_cosines

TARGET = 0.95  # the published graph may be at most ~5% slower than the fused one


def fuse_for_onnxruntime(source: Path, target: Path, data_name: str) -> dict[str, int]:
    """onnxscript's ORT fusions, as far as MultiHeadAttention (the packed-QKV `Attention` op would keep int8
    quantisation off the QKV projection)."""
    from unittest import mock

    from onnxscript import ir
    from onnxscript.rewriter.ort_fusions import _core, optimize_for_ort

    model = ir.load(source)
    if hasattr(_core, "fuse_attention"):
        with mock.patch.object(_core, "fuse_attention", lambda *args, **kwargs: 0):
            model, counts = optimize_for_ort(model)
    else:
        model, counts = optimize_for_ort(model)
    ir.save(model, target, external_data=data_name)
    return {name: n for name, n in counts.items() if n}


def fused_graph(ctx: BenchContext, quantize: str, batch: int, seq: int) -> Path:
    """The former export of the dense model (cached in the bench cache): pooled head → dynamo → fused (→ int8)."""
    import torch

    from neuronforge.backends.heads import EncoderHead, load_library_model

    folder = ctx.cache_dir / "layouts" / f"{DENSE_MODEL}-fused-{quantize}-b{batch}-s{seq}"
    final = folder / ("model_int8.onnx" if quantize == "int8" else "model.onnx")
    if final.is_file():
        return final
    with ctx.setup(f"export the fused graph ({quantize})"), tempfile.TemporaryDirectory() as tmp:
        folder.mkdir(parents=True, exist_ok=True)
        head = EncoderHead(load_library_model("dense", ctx.model_dir(DENSE_MODEL))).eval()
        dims = torch.export.Dim("batch", min=1, max=batch), torch.export.Dim("sequence", min=1, max=seq)
        dummy = (torch.ones((4, 16), dtype=torch.long), torch.ones((4, 16), dtype=torch.long))
        exported = Path(tmp) / "exported.onnx"
        with torch.inference_mode():
            torch.onnx.export(
                head,
                dummy,
                str(exported),
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                opset_version=18,
                dynamo=True,
                external_data=True,
                dynamic_shapes=({0: dims[0], 1: dims[1]}, {0: dims[0], 1: dims[1]}),
            )
        fp32 = folder / "model.onnx"
        LOG.info(f"fused graph: {fuse_for_onnxruntime(exported, fp32, 'model.onnx.data')}")
        if quantize == "int8":
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.WARNING)  # the quantiser logs every tensor at INFO
            quantize_dynamic(
                fp32,
                final,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    return final


def encode_with(encoder: Any, runner: Any, texts: list[str]) -> np.ndarray:
    """encoder.encode through `runner` (the encoder's own runner is put back afterwards)."""
    own, encoder.runner = encoder.runner, runner
    try:
        return encoder.encode(texts, truncate=False)
    finally:
        encoder.runner = own


def layout_rows(ctx: BenchContext, encoders: dict[str, Any], slices: list[list[str]]) -> tuple[list[Row], dict]:
    """One row per precision: fused-graph time / published-graph time on the same chunks."""
    from neuronforge.backends.onnx import OnnxRunner

    rows, info = [], {}
    for precision, encoder in encoders.items():
        runner = encoder.runner
        path = fused_graph(ctx, "int8" if precision == "int8" else "none", runner.batch_size, runner.sequence_length)
        fused = OnnxRunner(
            path,
            runner.batch_size,
            runner.sequence_length,
            runner.pad_token_id,
            sub_batch=runner.sub_batch,
            sequence_bucket=runner.sequence_bucket,
        )
        contenders = {
            "published": lambda r, e=encoder, g=runner: encode_with(e, g, slices[r]),
            "fused": lambda r, e=encoder, g=fused: encode_with(e, g, slices[r]),
        }
        seconds, outputs = alternate(contenders, ctx.sizes.encode_rounds)
        stats = paired_ratio(seconds["fused"], seconds["published"])
        agree = row_cosines(np.concatenate(outputs["published"]), np.concatenate(outputs["fused"]))
        info[precision] = {"seconds": seconds, "paired_ratio": stats, "min_cosine_between_graphs": float(agree.min())}
        rows.append(
            Row(
                "dense",
                f"MiniLM ONNX {precision}: published onnx/model graph vs fused graph",
                f"the onnxscript-fused dynamo graph ({precision}), same runner",
                stats["median"],
                TARGET,
                quality=f"cosine between the graphs: min {agree.min():.6f}, mean {agree.mean():.6f}",
                # int8: two different quantisations of one model; each is held to the library by its own row.
                quality_ok=bool(agree.mean() >= 0.98 if precision == "int8" else agree.min() >= 0.9999),
                details={"paired_ratio": stats},
            )
        )
    return rows, info
