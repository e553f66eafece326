"""The ONNX backend (CPU default for encoders): torch.onnx.export of our encoder heads, run by onnxruntime.

What makes it fast on CPU (each measured by `make bench` against the plain libraries, see bench/):

- Graph fusion: onnxscript's `optimize_for_ort` rewrites the dynamo-exported graph into onnxruntime's fused
  MultiHeadAttention / SkipLayerNormalization / BiasGelu kernels (onnxruntime's own `transformers.optimizer` does not
  match the dynamo exporter's SDPA pattern; it only fuses GELU there).
- Sequence buckets: the graph has symbolic batch/sequence axes, but the runner only ever feeds it a fixed set of shapes,
  (sub_batch, k * sequence_bucket) up to the manifest's static (batch_size, sequence_length), the way a Neuron model is
  compiled once per bucket. Each batch is split into length-sorted sub-batches padded to their own bucket, so short
  chunks stop paying for the longest one. Outputs are per row and padding is masked, so results do not change.
- SPLADE pooling: max-pooled SPLADE is exported as max over the sequence first, then vocabulary bias, relu and log1p
  on [B, V], instead of all of them on every [B, S, V] logit. They are monotone, so the result is identical, and the
  largest tensor of the model is touched by two ops instead of six.

Optional int8 dynamic quantisation uses per-channel weights with reduced range: the default per-tensor int8 loses too
much (min cosine 0.918 against fp32 on MiniLM, measured), per-channel keeps mean cosine ~0.99.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.backends.base import Backend, ExportResult, Runner, copy_side_files
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

ONNX_FILE = "model.onnx"
ONNX_DATA = "model.onnx.data"
OPSET = 18
SEQUENCE_BUCKET = 16  # tokens: sub-batches are padded to a multiple of this (capped at sequence_length)
SUB_BATCH = 8  # rows per sub-batch: large enough to keep the matrix multiplies efficient


class OnnxRunner(Runner):
    def __init__(
        self,
        path: Path,
        batch_size: int,
        sequence_length: int,
        pad_token_id: int,
        threads: int = 0,
        *,
        sub_batch: int | None = None,
        sequence_bucket: int | None = None,
    ):
        super().__init__(batch_size, sequence_length, pad_token_id)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Idle workers sleep instead of spinning: on a CPU shared with other processes (or with torch's own pool in
        # the same process) spinning threads steal the cores the next run needs (measured: int8 1.7x → 2.0x).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # Artifacts exported before buckets existed have fixed input dims: run them at the full static shape.
        symbolic = any(not isinstance(dim, int) for dim in self.session.get_inputs()[0].shape)
        self.sub_batch = min(sub_batch or batch_size, batch_size) if symbolic else batch_size
        self.sequence_bucket = sequence_bucket if symbolic and sequence_bucket else sequence_length

    def _session_run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def bucket_length(self, tokens: int) -> int:
        """The shortest bucket that holds `tokens` tokens."""
        rounded = -(-max(tokens, 1) // self.sequence_bucket) * self.sequence_bucket
        return min(rounded, self.sequence_length)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.sub_batch == self.batch_size and self.sequence_bucket == self.sequence_length:
            return self._session_run(input_ids, attention_mask)
        # Length = up to the last attended position, so any padding side works. Rows with an empty mask (the rows
        # Runner.run padded the batch with) are skipped: the model maps them to zeros, which is what they get.
        attended = attention_mask != 0
        lengths = np.where(attended.any(axis=1), attended.shape[1] - np.argmax(attended[:, ::-1], axis=1), 0)
        rows = np.flatnonzero(lengths)
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        out: np.ndarray | None = None
        for start in range(0, rows.size, self.sub_batch):
            part = rows[start : start + self.sub_batch]
            length = self.bucket_length(int(lengths[part].max()))
            ids = np.full((self.sub_batch, length), self.pad_token_id, dtype=np.int64)
            mask = np.zeros((self.sub_batch, length), dtype=np.int64)
            ids[: part.size] = input_ids[part, :length]
            mask[: part.size] = attention_mask[part, :length]
            result = self._session_run(ids, mask)[: part.size]
            if out is None:
                out = np.zeros((input_ids.shape[0], *result.shape[1:]), dtype=result.dtype)
            out[part] = result
        if out is None:  # nothing but empty rows
            width = self.session.get_outputs()[0].shape[-1]
            out = np.zeros((input_ids.shape[0], width), dtype=np.float32)
        return out


def pool_first_splade_head(library_model: Any):
    """The pool-first SPLADE head for a SparseEncoder made of [MLM transformer, SpladePooling(max)], else None.

    SpladePooling computes max_s act(logits[b, s, v] * mask[b, s]) with act = log1p∘relu (or log1p∘log1p∘relu). act
    is monotone non-decreasing and act(x) >= act(0) = 0, so that equals act(max of logits over attended s), and the
    vocabulary bias, constant over s, can be added after the max: max_s(x_s + b) = max_s(x_s) + b (rounding is
    monotone too). The same floats, with one masking add and one max over the [B, S, V] logits instead of bias add,
    multiply, relu, add, log and max.
    """
    import copy

    import torch
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    modules = list(library_model)
    pooling = modules[-1]
    if (
        len(modules) != 2
        or not isinstance(pooling, SpladePooling)
        or pooling.pooling_strategy != "max"
        or pooling.activation_function not in ("relu", "log1p_relu")
    ):
        return None
    double_log = pooling.activation_function == "log1p_relu"
    mlm = copy.deepcopy(modules[0])
    decoder = getattr(getattr(mlm, "auto_model", None), "get_output_embeddings", lambda: None)()
    vocab_bias = None
    if isinstance(decoder, torch.nn.Linear) and decoder.bias is not None:
        vocab_bias = decoder.bias.detach().clone()
        decoder.bias = None  # the copy's decoder now returns W·h; the bias is added after pooling

    class PoolFirstSplade(torch.nn.Module):
        """(input_ids [B, S], attention_mask [B, S]) → SPLADE activations [B, V]."""

        def __init__(self, mlm: torch.nn.Module, vocab_bias: torch.Tensor | None):
            super().__init__()
            self.mlm = mlm
            self.register_buffer("vocab_bias", vocab_bias)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            features = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": torch.zeros_like(input_ids),
            }
            logits = self.mlm(features)["token_embeddings"]
            # -inf on padded positions ([B, S, 1], broadcast): an empty row pools to -inf, which relu maps to 0.
            padding = torch.zeros_like(attention_mask, dtype=logits.dtype).masked_fill(attention_mask == 0, -torch.inf)
            pooled = (logits + padding.unsqueeze(-1)).amax(dim=1)
            if self.vocab_bias is not None:
                pooled = pooled + self.vocab_bias
            pooled = torch.log1p(torch.relu(pooled))
            return torch.log1p(pooled) if double_log else pooled

    return PoolFirstSplade(mlm, vocab_bias).eval()


def fuse_for_onnxruntime(source: Path, target: Path, log: logging.Logger) -> dict[str, int]:
    """Rewrite `source` into onnxruntime's fused transformer kernels, saved as `target` + model.onnx.data.

    Attention is fused as far as MultiHeadAttention, not into the packed-QKV `Attention` op: that op takes its Q/K/V
    weights from a runtime Concat, which int8 quantisation cannot touch, so the QKV projection stayed fp32 (measured:
    int8 MiniLM 1.7x → 2.0x over torch with separate, quantised Q/K/V MatMuls; fp32 unchanged).
    """
    from unittest import mock

    from onnxscript import ir
    from onnxscript.rewriter.ort_fusions import _core, optimize_for_ort

    model = ir.load(source)
    if hasattr(_core, "fuse_attention"):
        with mock.patch.object(_core, "fuse_attention", lambda *args, **kwargs: 0):
            model, counts = optimize_for_ort(model)
    else:  # a newer onnxscript without that step: take its full fusion
        model, counts = optimize_for_ort(model)
    ir.save(model, target, external_data=ONNX_DATA)
    fused = {name: n for name, n in counts.items() if n}
    log.info(f"onnxruntime fusions: {fused or 'none matched'}")
    return fused


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, threads: int = 0):
        self.threads = threads

    def export_options(self, spec: ModelSpec) -> dict[str, Any]:
        options: dict[str, Any] = {
            "opset": OPSET,
            "quantize": spec.quantize,
            "fusion": "onnxscript-ort-mha",
            "sequence_bucket": SEQUENCE_BUCKET,
            "sub_batch": min(SUB_BATCH, spec.batch_size),
        }
        if spec.kind == "sparse":
            options["splade_head"] = "max-then-bias-activate"
        if spec.quantize == "int8":
            options.update(per_channel=True, reduce_range=True)
        return options

    def export(self, spec: ModelSpec, model: ResolvedModel, out_dir: Path, log: logging.Logger) -> ExportResult:
        if spec.kind == "chat":
            raise ValueError(f"{spec.name}: chat models export with the torch or neuron backend, not onnx")
        import torch

        from neuronforge.backends.heads import EncoderHead, load_library_model

        library_model = load_library_model(spec.kind, model.path, trust_remote_code=spec.trust_remote_code)
        options: dict[str, Any] = {}
        head = pool_first_splade_head(library_model) if spec.kind == "sparse" else None
        if spec.kind == "sparse" and head is None:
            log.info(f"{spec.name}: not a max-pooled SPLADE model; exporting the library's own pooling")
            options["splade_head"] = "library"
        head = head or EncoderHead(library_model).eval()

        # Symbolic axes bounded by the static shapes; example sizes above 1 so torch.export does not specialise them.
        batch = torch.export.Dim("batch", min=1, max=max(spec.batch_size, 2))
        sequence = torch.export.Dim("sequence", min=1, max=max(spec.sequence_length, 2))
        example = (min(max(spec.batch_size, 2), 4), min(max(spec.sequence_length, 2), 16))
        dummy = (torch.ones(example, dtype=torch.long), torch.ones(example, dtype=torch.long))
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
            exported, fused = Path(tmp) / "exported", Path(tmp) / "fused"
            exported.mkdir()
            fused.mkdir()
            log.info(f"{spec.name}: torch.onnx.export with axes bounded by the static shape {spec.shapes}")
            with torch.inference_mode():
                torch.onnx.export(
                    head,
                    dummy,
                    str(exported / ONNX_FILE),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["sentence_embedding"],
                    opset_version=OPSET,
                    dynamo=True,
                    external_data=True,
                    dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
                    verbose=False,
                )
            fp32 = (fused if spec.quantize == "int8" else out_dir) / ONNX_FILE
            fusions = fuse_for_onnxruntime(exported / ONNX_FILE, fp32, log)
            if spec.quantize == "int8":
                import onnx
                from onnxruntime.quantization import QuantType, quantize_dynamic

                log.info(f"{spec.name}: int8 dynamic quantisation (per-channel, reduced range)")
                quantize_dynamic(
                    fp32,
                    out_dir / ONNX_FILE,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,
                    # Fused contrib ops carry no type information the quantizer can infer: their outputs are float.
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        copy_side_files(model.path, out_dir)
        return ExportResult(
            format="onnx-int8" if spec.quantize == "int8" else "onnx",
            options=options,
            extra={"onnx_fusions": fusions},
        )

    def load_runner(self, artifact_dir: Path, manifest: dict[str, Any]) -> Runner:
        shapes, options = manifest["shapes"], manifest.get("options", {})
        return OnnxRunner(
            Path(artifact_dir) / ONNX_FILE,
            shapes["batch_size"],
            shapes["sequence_length"],
            manifest["pad_token_id"],
            threads=self.threads,
            sub_batch=options.get("sub_batch"),
            sequence_bucket=options.get("sequence_bucket"),
        )
