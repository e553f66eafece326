"""A stand-in for the AWS Neuron SDK (neuronx-cc, torch-neuronx, neuronx-distributed, libneuronxla) for tests.

There is no Neuron device or SDK here, and PyPI's packages of those names are placeholders. The `neuron_sdk_stub`
fixture puts a minimal stand-in on sys.path, with package metadata so optimum-neuron's `is_neuronx_available()` is
true, plus the torch_xla modules they drag in. Its `torch_neuronx.trace` has torch-neuronx 2.8's signature, records
its arguments and returns `torch.jit.trace(func, example_inputs)`: a CPU TorchScript stand-in for the NEFF-carrying
TorchScript the real one returns. Everything above that boundary is the real code (optimum-neuron's exporters and
loaders, our heads and runners). Import the fixtures into a test module:

    from neuron_stub import neuron_sdk_stub, no_neuron_sdk, stub_root  # noqa: F401  (pytest fixtures)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TARGET_ENV = "NEURON_PLATFORM_TARGET_OVERRIDE"  # neuronforge.backends.neuron.TARGET_ENV (kept import-free here)

# Modules the stub provides, and the optimum-neuron modules that bind to it on import: purged around each stub test.
STUB_PREFIXES = ("torch_neuronx", "neuronxcc", "neuronx_distributed", "libneuronxla", "torch_xla")
BOUND_PREFIXES = ("optimum.neuron", "optimum.exporters.neuron", "optimum.commands")

STUB_FILES = {
    "torch_neuronx/__init__.py": '''
import torch

calls = []
core_assignments = []


def trace(func, example_inputs, *_, input_output_aliases={}, compiler_workdir=None, compiler_args=None,
          partitioner_config=None, inline_weights_to_neff=True, cpu_backend=False):
    """Signature of torch-neuronx 2.8's trace; returns a CPU TorchScript trace instead of compiling a NEFF."""
    calls.append(dict(func=func, example_inputs=example_inputs, input_output_aliases=input_output_aliases,
                      compiler_workdir=compiler_workdir, compiler_args=compiler_args,
                      inline_weights_to_neff=inline_weights_to_neff, cpu_backend=cpu_backend))
    # check_trace off: the re-trace check flags SpladePooling's chunk loop for value names alone; neuronx has no such check.
    return torch.jit.trace(func, example_inputs, check_trace=False)


def move_trace_to_device(trace, device_id):
    pass


class DataParallel:
    pass


class experimental:
    @staticmethod
    def set_neuron_cores(trace, start_nc=-1, nc_count=-1):
        core_assignments.append((start_nc, nc_count))
''',
    "neuronxcc/__init__.py": '__version__ = "2.21.33363.0"\n',
    "neuronx_distributed/__init__.py": "from . import parallel_layers, trace\n",
    "neuronx_distributed/trace/__init__.py": "",
    "neuronx_distributed/trace/hlo_utils.py": 'NXD_LAYOUT_TRANSFORMATION_OPTIONS = "NXD_LAYOUT_TRANSFORMATION_OPTIONS"\n',
    "neuronx_distributed/trace/model_builder.py": "class BaseModelInstance:\n    pass\n\n\nclass ModelBuilder:\n    pass\n",
    "neuronx_distributed/parallel_layers/__init__.py": "from . import parallel_state\n",
    "neuronx_distributed/parallel_layers/parallel_state.py": "",
    "libneuronxla/__init__.py": "",
    "libneuronxla/neuron_cc_cache.py": "".join(
        f"class {name}:\n    pass\n\n\n" for name in ("CacheUrl", "CompileCache", "CompileCacheFs", "CompileCacheS3")
    )
    + "def create_compile_cache(*args, **kwargs):\n    pass\n",
    # torch_xla ships with torch-neuronx; optimum-neuron imports these when it sees torch_neuronx. No metadata, and
    # USE_TORCH_XLA=0, so transformers/accelerate never treat it as installed.
    "torch_xla/__init__.py": "",
    "torch_xla/core/__init__.py": "",
    "torch_xla/core/xla_model.py": "",
    "torch_xla/runtime.py": "",
    "torch_xla/distributed/__init__.py": "",
}
# The versions optimum-neuron 0.4.5's [neuronx] extra pins.
STUB_DISTRIBUTIONS = {
    "torch_neuronx": "2.8.0.2.10.16998",
    "neuronx_cc": "2.21.33363.0",
    "neuronx_distributed": "0.15.22404",
    "libneuronxla": "2.2.12677.0",
}


def purge_modules(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            del sys.modules[name]


@pytest.fixture(scope="module")
def stub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("neuron_sdk_stub")
    for rel, text in STUB_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for dist, version in STUB_DISTRIBUTIONS.items():
        info = root / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n")
    return root


@pytest.fixture
def neuron_sdk_stub(stub_root, monkeypatch):
    """The stub SDK importable for one test; the optimum-neuron modules bound to it are dropped afterwards."""
    # Probe torch_xla (and cache "absent") before the stub's torch_xla becomes importable.
    import accelerate.data_loader  # noqa: F401
    import sentence_transformers  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    monkeypatch.setenv("USE_TORCH_XLA", "0")
    monkeypatch.delenv(TARGET_ENV, raising=False)
    # Set by optimum.exporters.neuron on import; must not leak into later tests (torch.onnx's dynamo export).
    monkeypatch.delenv("TORCHDYNAMO_DISABLE", raising=False)
    purge_modules(STUB_PREFIXES + BOUND_PREFIXES)
    monkeypatch.syspath_prepend(str(stub_root))
    import torch_neuronx

    yield torch_neuronx
    purge_modules(STUB_PREFIXES + BOUND_PREFIXES)


@pytest.fixture
def no_neuron_sdk(monkeypatch):
    monkeypatch.delenv(TARGET_ENV, raising=False)
    purge_modules(STUB_PREFIXES + BOUND_PREFIXES)
    assert importlib.util.find_spec("torch_neuronx") is None
