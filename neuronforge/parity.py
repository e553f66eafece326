"""Parity of an encoder artifact with the plain library, judged against a tolerance that fits how it was compiled,
and the verification record that says an artifact's parity was measured (what publishing waits for).

Tolerances, by how the artifact was compiled (fp32 stays 0.9999). The Neuron rows come from
`python -m bench.autocast_parity`: a CPU emulation of neuronx-cc's --auto-cast on the built-in MiniLM and SPLADE-tiny
over 256 texts (figures in docs/neuron.md); each threshold is 1 - 5 x (1 - the worst emulated min cosine), rounded
down and never stricter than fp32 (fp8: 2.5 x), because the device rounds and accumulates in another order than
the CPU.

| artifact                                   | judged on   | worst emulated | threshold |
|--------------------------------------------|-------------|----------------|-----------|
| fp32 (onnx, torch, neuron auto_cast none)  | min cosine  |                | 0.9999    |
| onnx int8                                  | mean cosine |                | 0.98      |
| neuron auto_cast matmul, bf16              | min cosine  | 0.999957       | 0.9995    |
| neuron auto_cast matmul, fp16              | min cosine  | 0.999999       | 0.9999    |
| neuron auto_cast matmul, tf32              | min cosine  | 0.999999       | 0.9999    |
| neuron auto_cast matmul, fp8_e4m3          | min cosine  | 0.987780       | 0.95      |
| neuron auto_cast all, bf16                 | min cosine  | 0.999622       | 0.998     |
| neuron auto_cast all, fp16                 | min cosine  | 0.999936       | 0.9995    |
| neuron auto_cast all, fp8_e4m3 / tf32      | -           | not emulated   | none: the check reports "not evaluated" |
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.records import RecordStore, StageRecord

PARITY_TEXTS = [
    "Neuron compiles models for static shapes.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun by the river bank.",
    "Inverted indexes map each term to the documents that contain it.",
]
FP32_MIN_COSINE = 0.9999
INT8_MEAN_COSINE = 0.98
# (auto_cast, auto_cast_type) -> min cosine of a Neuron artifact; see the table above.
NEURON_MIN_COSINE: dict[tuple[str, str], float] = {
    ("matmul", "bf16"): 0.9995,
    ("matmul", "fp16"): 0.9999,
    ("matmul", "tf32"): 0.9999,
    ("matmul", "fp8_e4m3"): 0.95,
    ("all", "bf16"): 0.998,
    ("all", "fp16"): 0.9995,
}
# The records that say an artifact's parity was measured: records/verification/<model>/<compile_key>.json.
VERIFICATION_STAGE = "verification"


@dataclass(frozen=True)
class Tolerance:
    metric: str  # "min_cosine" | "mean_cosine"
    threshold: float
    basis: str  # what the threshold is for, in words

    def passes(self, scores: dict[str, float]) -> bool:
        return scores[self.metric] >= self.threshold

    def describe(self) -> str:
        return f"{self.metric.replace('_', ' ')} >= {self.threshold} ({self.basis})"


def tolerance_for(manifest: dict[str, Any]) -> Tolerance:
    """The parity threshold of an artifact, from how its manifest says it was compiled."""
    fmt = str(manifest.get("format", ""))
    if fmt.endswith("int8"):
        return Tolerance("mean_cosine", INT8_MEAN_COSINE, "int8 weights")
    options = manifest.get("options") or {}
    auto_cast = options.get("auto_cast") or "none"
    if manifest.get("backend") == "neuron" and auto_cast != "none":
        kind = str(options.get("auto_cast_type"))
        if (auto_cast, kind) not in NEURON_MIN_COSINE:
            raise ValueError(
                f"no parity tolerance is measured for auto_cast {auto_cast!r} with auto_cast_type {kind!r} "
                f"(known: {', '.join(f'{a}/{t}' for a, t in NEURON_MIN_COSINE)})"
            )
        return Tolerance("min_cosine", NEURON_MIN_COSINE[auto_cast, kind], f"neuron auto_cast {auto_cast}, {kind}")
    return Tolerance("min_cosine", FP32_MIN_COSINE, "fp32")


def row_cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `got` with the same row of `want` ([N, D] x [N, D] → [N])."""
    return (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)


def parity(artifact_dir: Path, model_dir: Path, kind: str, sequence_length: int) -> dict[str, float]:
    """Compare an encoder artifact with the plain library on texts of mixed lengths (rows must stay in order)."""
    from neuronforge.backends import load_encoder
    from neuronforge.backends.heads import reference_encode

    got = load_encoder(artifact_dir).encode(PARITY_TEXTS)
    want = reference_encode(kind, model_dir, PARITY_TEXTS, sequence_length)
    cosine = row_cosines(got, want)
    return {
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_diff": float(np.abs(got - want).max()),
    }


def record_verification(
    records: RecordStore,
    model: str,
    manifest: dict[str, Any],
    scores: dict[str, float],
    *,
    evaluated_by: str,
    device: str,
) -> StageRecord:
    """Write the evidence that `manifest`'s artifact was run and compared (passed or not)."""
    tolerance = tolerance_for(manifest)
    return records.write(
        VERIFICATION_STAGE,
        model,
        str(manifest["compile_key"]),
        {
            "compile_key": manifest["compile_key"],
            "passed": tolerance.passes(scores),
            "scores": scores,
            "metric": tolerance.metric,
            "threshold": tolerance.threshold,
            "basis": tolerance.basis,
            "evaluated_by": evaluated_by,
            "device": device,  # "neuron" or "cpu"/"cuda": where the artifact ran
            "host": platform.node(),
        },
    )


def verification_for(records: RecordStore, model: str, compile_key: str) -> StageRecord | None:
    """The verification of this exact artifact, or None when its parity was never measured."""
    from neuronforge.records import RecordMissingError

    try:
        return records.read(VERIFICATION_STAGE, model, compile_key)
    except RecordMissingError:
        return None


@dataclass(frozen=True)
class PublishGate:
    """Whether an artifact may be published, and the words that say why (logged, and shown on its card)."""

    allowed: bool
    verified: bool | None  # None: not judged here (chat artifacts)
    reason: str

    def card_extra(self) -> dict[str, Any]:
        """What the card states about verification (a pure function of the gate: no hosts or dates)."""
        if self.verified is None:
            return {}
        extra: dict[str, Any] = {"neuronforge": {"verified": self.verified}}
        if not self.verified:
            extra["sections"] = {"Verification": self.reason}
        return extra


def publish_gate(
    model: str, kind: str, compile_key: str, verification: StageRecord | None, unverified_ok: bool
) -> PublishGate:
    """Publish only what was verified: an encoder whose parity was measured and passed; one never measured only with
    `publish_unverified: true` in models.yaml. Chat artifacts are gated by their smoke evaluation's blocking checks."""
    if kind == "chat":
        return PublishGate(True, None, "chat artifacts are gated by the chat smoke evaluation's blocking checks")
    if verification is not None:
        scores, metric = verification["scores"], verification["metric"]
        measured = f"{metric.replace('_', ' ')} {scores[metric]:.6f} against threshold {verification['threshold']}"
        if verification["passed"]:
            return PublishGate(True, True, f"parity measured on {verification['device']}: {measured}")
        return PublishGate(
            False, False, f"{model}: artifact {compile_key} failed its parity check ({measured}); it is not published"
        )
    if unverified_ok:
        return PublishGate(
            True,
            False,
            "**Not verified**: this artifact's parity with the reference library was never measured on a device "
            "that can run it; it was published because models.yaml sets `publish_unverified: true`.",
        )
    return PublishGate(
        False,
        False,
        f"{model}: artifact {compile_key} was never run, so its parity is unknown; publishing waits for a "
        "verification on a host that can run it (run `neuronforge-validate` or the pipeline on an inf2/trn1 host), "
        f"or set `publish_unverified: true` for {model} in models.yaml to publish it anyway",
    )
