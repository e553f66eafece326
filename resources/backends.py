"""The backend each model exports and runs with, as a Dagster resource over `neuronforge.backends`."""

from __future__ import annotations

import dagster as dg

from neuronforge.backends import Backend, auto_backend_name, get_backend
from neuronforge.registry import BACKENDS, ModelSpec


class BackendResource(dg.ConfigurableResource):
    """Chooses the backend for each model: `backend` here overrides models.yaml; "auto" lets each entry decide,
    and an entry's "auto" means neuron on a Neuron host, torch on CUDA (and for chat), onnx on CPU."""

    backend: str = "auto"
    onnx_threads: int = 0  # 0: onnxruntime's default (all cores)
    # Persistent compile cache of Neuron decoder compiles (a folder or s3:// URL); recorded in export metadata.
    neuron_compile_cache_url: str | None = None  # unset: NEURON_COMPILE_CACHE_URL, else /var/tmp/neuron-compile-cache
    # Before compiling for Neuron, download the same compile key if the configured Hub has it published.
    reuse_published: bool = True

    def backend_name(self, spec: ModelSpec) -> str:
        if self.backend not in BACKENDS:
            raise ValueError(f"BackendResource.backend={self.backend!r}; use one of {', '.join(BACKENDS)}")
        name = self.backend if self.backend != "auto" else spec.backend
        if name == "auto":
            name = auto_backend_name(spec.kind)
        if spec.kind == "chat" and name == "onnx":
            name = "torch"  # chat runs as a transformers folder with the same static limits
        return name

    def for_model(self, spec: ModelSpec) -> Backend:
        return get_backend(
            self.backend_name(spec),
            onnx_threads=self.onnx_threads,
            neuron_compile_cache_url=self.neuron_compile_cache_url,
        )
