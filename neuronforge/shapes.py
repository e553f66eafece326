"""The static-shape contract every artifact keeps: Neuron compiles for fixed (batch_size, sequence_length), and the
ONNX / torch exports enforce the same limits, so an artifact behaves alike on CPU, CUDA and Inferentia."""

from __future__ import annotations


class StaticShapeError(ValueError):
    """An input is larger than the static shapes the artifact was compiled for (batch_size, sequence_length)."""
