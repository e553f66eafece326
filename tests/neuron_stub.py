"""A stand-in for the AWS Neuron SDK (torch-neuronx, neuronx-cc, neuronx-distributed, libneuronxla, torch_xla), so
optimum-neuron 0.4.5's real Python runs here.

Only the SDK is replaced. A `sys.meta_path` finder serves every module under the SDK's packages; package metadata
(dist-info folders) makes optimum-neuron's `is_neuronx_available()` true. Names the real code only imports resolve to
inert stubs that raise `SDKStubError` when used, so a code path that reaches into the SDK unexpectedly fails loudly.
What the tests need the SDK to do is written out below, each piece from the upstream call site it serves:

- `torch_neuronx.trace` records its arguments and returns `torch.jit.trace(...)`: a CPU TorchScript graph where
  the real one returns TorchScript carrying a NEFF.
- `neuronx_distributed.trace.model_builder.ModelBuilder` (optimum-neuron's decoder compile and checkpoint sharding,
  models/inference/backend/pretrained_model.py:54-101, 147-177): `trace()` returns the CPU decoder graph of
  tests/neuron_standin.py instead of compiled NEFFs, `shard_checkpoint()` writes rank checkpoints.
- Importing torch-neuronx registers the TorchScript classes that let `torch.jit.load` read Neuron graphs; the stub
  registers the stand-in graph's loader the same way (`torch.jit.load` of anything else is untouched).
- `fake_neuron_host` answers optimum-neuron's host probes (/proc/devices, /dev/neuron*, DMI product name) as an inf2
  or trn1 host would; no other code sees a device.

A child process sees the stub SDK as installed when the stub's root is on its PYTHONPATH: the root holds the
package metadata and a `sitecustomize.py` that installs the finder at interpreter start-up (where a real SDK would be
in site-packages already). Nothing else in the child changes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SDK_PACKAGES = ("torch_neuronx", "neuronxcc", "neuronx_distributed", "libneuronxla", "torch_xla")
# The optimum-neuron modules that bind to the SDK when imported: purged with it, so each test imports them afresh.
BOUND_PREFIXES = ("optimum.neuron", "optimum.exporters.neuron", "optimum.commands")
# The versions optimum-neuron 0.4.5's [neuronx] extra pins (torch_xla has no metadata: transformers/accelerate must
# never treat it as installed).
DISTRIBUTIONS = {
    "torch_neuronx": "2.8.0.2.10.16998",
    "neuronx_cc": "2.21.33363.0",
    "neuronx_distributed": "0.15.22404",
    "libneuronxla": "2.2.12677.0",
}
TARGET_ENV = "NEURON_PLATFORM_TARGET_OVERRIDE"
# The stub root's sitecustomize.py: a Python started with the root on PYTHONPATH has the stub SDK installed.
CHILD_INSTALL = """# Written by tests/neuron_stub.py: installs the stub Neuron SDK in this interpreter (a child process of a test).
import sys

sys.path.insert(0, {tests!r})
import pytest
from neuron_stub import NeuronSDKStub

NeuronSDKStub({root!r}).install(pytest.MonkeyPatch(), probe_torch_xla_first=False)
sys.path.remove({tests!r})

# Python runs only the first sitecustomize on sys.path: run the one this file shadows (a venv's, Debian's), if any.
import importlib.util
import os

for entry in sys.path:
    shadowed = os.path.join(entry or os.curdir, "sitecustomize.py")
    if os.path.realpath(shadowed) != os.path.realpath(__file__) and os.path.isfile(shadowed):
        spec = importlib.util.spec_from_file_location("_sitecustomize_shadowed_by_neuron_stub", shadowed)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        break
"""


class SDKStubError(RuntimeError):
    """Real code reached a part of the Neuron SDK this stub does not provide."""


def _missing_function(qualname: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise SDKStubError(f"{qualname} is part of the Neuron SDK, which the stub does not provide")

    missing.__qualname__ = qualname
    return missing


def _kernel_decorator(qualname: str) -> Callable[..., Any]:
    """An SDK decorator optimum-neuron applies at import time (its NKI kernels): the kernel fails only if called."""

    def decorate(fn: Any) -> Any:
        return _missing_function(f"{qualname}({getattr(fn, '__name__', 'kernel')})")

    return decorate


class _StubMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing_function(f"{cls.__module__}.{cls.__qualname__}.{name}")


def _missing_class(module: str, name: str) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise SDKStubError(f"{module}.{name} is part of the Neuron SDK, which the stub does not provide")

    return _StubMeta(name, (), {"__module__": module, "__qualname__": name, "__init__": __init__})


class _SDKFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, provided: dict[str, dict[str, Any]]) -> None:
        self.provided = provided

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in SDK_PACKAGES:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []
        module.__dict__.update(self.provided.get(module.__name__, {}))

        def __getattr__(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            stub = (
                _missing_class(module.__name__, name)
                if name[:1].isupper()
                else _missing_function(f"{module.__name__}.{name}")
            )
            setattr(module, name, stub)
            return stub

        module.__getattr__ = __getattr__


def purge_modules(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            del sys.modules[name]


class NeuronSDKStub:
    """The stub SDK, importable between `install` and `uninstall`; records what the real code asked of it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.calls: list[dict[str, Any]] = []
        self.core_assignments: list[tuple[int, int]] = []
        self.builders: list[Any] = []  # every ModelBuilder optimum-neuron created
        self._finder = _SDKFinder(self._provided())
        files = {
            f"{dist}-{version}.dist-info/METADATA": (
                f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n"
            )
            for dist, version in DISTRIBUTIONS.items()
        }
        files["sitecustomize.py"] = CHILD_INSTALL.format(
            tests=str(Path(__file__).resolve().parent), root=str(self.root)
        )
        for rel, text in files.items():
            path = self.root / rel
            if not path.is_file() or path.read_text() != text:  # children may be starting from this root already
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}")
                tmp.write_text(text)
                tmp.replace(path)

    # -- what the SDK does for the tests --------------------------------------------------------------------------

    def _provided(self) -> dict[str, dict[str, Any]]:
        import neuron_standin

        stub = self

        def trace(
            func,
            example_inputs,
            *_,
            input_output_aliases={},  # noqa: B006  (torch-neuronx 2.8's own signature)
            compiler_workdir=None,
            compiler_args=None,
            partitioner_config=None,
            inline_weights_to_neff=True,
            cpu_backend=False,
        ):
            """torch-neuronx 2.8's trace signature; a CPU TorchScript trace instead of a NEFF."""
            import torch

            stub.calls.append(
                dict(
                    func=func,
                    example_inputs=example_inputs,
                    input_output_aliases=input_output_aliases,
                    compiler_workdir=compiler_workdir,
                    compiler_args=compiler_args,
                    inline_weights_to_neff=inline_weights_to_neff,
                    cpu_backend=cpu_backend,
                )
            )
            # check_trace off: the re-trace check flags SpladePooling's chunk loop for value names alone.
            return torch.jit.trace(func, example_inputs, check_trace=False)

        def set_neuron_cores(trace, start_nc=-1, nc_count=-1):
            stub.core_assignments.append((start_nc, nc_count))

        class ModelBuilder(neuron_standin.StandInModelBuilder):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                stub.builders.append(self)

        class CacheUrl:
            @classmethod
            def get_cache_url(cls, cache_dir=None):
                return cache_dir or "/var/tmp/neuron-compile-cache"

        class CompileCache:
            def __init__(self, url: str) -> None:
                self.url = url

        return {
            "torch_neuronx": {
                "__version__": DISTRIBUTIONS["torch_neuronx"],
                "trace": trace,
                "move_trace_to_device": lambda trace, device_id: None,
                "DataParallel": type("DataParallel", (), {}),
                "experimental": types.SimpleNamespace(set_neuron_cores=set_neuron_cores),
            },
            "neuronxcc": {"__version__": DISTRIBUTIONS["neuronx_cc"]},
            # Applied to NKI kernels when optimum-neuron's modules import (attention_base.py:51, sampling.py:93).
            "torch_neuronx.xla_impl.ops": {
                "nki_jit": lambda *a, **k: _kernel_decorator("torch_neuronx.xla_impl.ops.nki_jit"),
                "xla_hlo_call": _kernel_decorator("torch_neuronx.xla_impl.ops.xla_hlo_call"),
            },
            "torch_neuronx.xla_impl.base": {
                "xla_hlo_call": _kernel_decorator("torch_neuronx.xla_impl.base.xla_hlo_call")
            },
            "neuronx_distributed.trace.hlo_utils": {
                "NXD_LAYOUT_TRANSFORMATION_OPTIONS": "NXD_LAYOUT_TRANSFORMATION_OPTIONS"
            },
            "neuronx_distributed.trace.model_builder": {
                "ModelBuilder": ModelBuilder,
                "BaseModelInstance": neuron_standin.BaseModelInstance,
            },
            "libneuronxla.neuron_cc_cache": {
                "CacheUrl": CacheUrl,
                "CompileCache": CompileCache,
                "CompileCacheFs": type("CompileCacheFs", (CompileCache,), {}),
                "CompileCacheS3": type("CompileCacheS3", (CompileCache,), {}),
                "create_compile_cache": CompileCache,
            },
        }

    # -- installing -------------------------------------------------------------------------------------------------

    def install(self, monkeypatch: Any, *, probe_torch_xla_first: bool = True) -> None:
        """Make the SDK importable. In a test process, first let transformers / accelerate / sentence-transformers
        probe torch_xla (and cache "absent"); a fresh snippet process skips that, keeping huggingface_hub unimported
        until the snippet sets HF_ENDPOINT (USE_TORCH_XLA=0 keeps the stub's torch_xla invisible to them anyway)."""
        import neuron_standin
        import torch

        if probe_torch_xla_first:
            import accelerate.data_loader  # noqa: F401
            import sentence_transformers  # noqa: F401
            import transformers.modeling_utils  # noqa: F401

        monkeypatch.setenv("USE_TORCH_XLA", "0")
        monkeypatch.delenv(TARGET_ENV, raising=False)
        # Set by optimum.exporters.neuron on import; must not leak into later tests (torch.onnx's dynamo export).
        monkeypatch.delenv("TORCHDYNAMO_DISABLE", raising=False)
        purge_modules(SDK_PACKAGES + BOUND_PREFIXES)
        monkeypatch.syspath_prepend(str(self.root))
        sys.meta_path.insert(0, self._finder)
        monkeypatch.setattr(torch.jit, "load", neuron_standin.registered_jit_load(torch.jit.load))

    def uninstall(self) -> None:
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        purge_modules(SDK_PACKAGES + BOUND_PREFIXES)


def host_probes(root: Path, instance_type: str = "inf2.xlarge", devices: int = 1) -> dict[str, dict[str, Any]]:
    """What optimum-neuron's host probes answer on `instance_type` with `devices` Neuron chips, per module: the
    functions reading /proc/devices, /dev and the DMI product name (optimum/neuron/utils/system.py:29-90, imported by
    name into utils/instance.py), and the driver's sysfs memory counters (utils/neuron_device_memory.py:35, read after
    loading weights), here an empty tree under `root`."""
    sysfs = Path(root) / "sys" / "devices" / "virtual" / "neuron_device"
    cores = 4 if instance_type.startswith("trn2") else 2
    for chip in range(devices):
        for core in range(cores):
            (sysfs / f"neuron{chip}" / f"neuron_core{core}").mkdir(parents=True, exist_ok=True)
    host = {"get_neuron_major": lambda: 245, "get_instance_name": lambda: instance_type}
    return {
        "optimum.neuron.utils.system": {**host, "get_neuron_devices_count": lambda: devices},
        "optimum.neuron.utils.instance": host,
        "optimum.neuron.utils.neuron_device_memory": {"SYSFS_NEURON_BASE": sysfs},
    }


def _clear_host_caches(module: types.ModuleType) -> None:
    for name in ("cores_per_device", "current_instance_type"):
        if hasattr(module, name):
            getattr(module, name).cache_clear()


def fake_neuron_host(monkeypatch: Any, root: Path, instance_type: str = "inf2.xlarge", devices: int = 1) -> None:
    """optimum-neuron sees `instance_type` with `devices` chips for one test (see host_probes)."""
    for name, values in host_probes(root, instance_type, devices).items():
        module = importlib.import_module(name)
        for attr, value in values.items():
            monkeypatch.setattr(module, attr, value)
        _clear_host_caches(module)


class _PatchedOnImport(importlib.abc.MetaPathFinder):
    """Applies host_probes to optimum-neuron's modules as they are imported (a user's fresh interpreter)."""

    def __init__(self, probes: dict[str, dict[str, Any]]) -> None:
        self.probes = probes

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.probes:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader, values = spec.loader, self.probes[fullname]

        class Patching(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                module.__dict__.update(values)

        spec.loader = Patching()
        return spec


def fake_neuron_host_on_import(root: Path, instance_type: str = "inf2.xlarge", devices: int = 1) -> None:
    """Like fake_neuron_host, for a process that has not imported optimum-neuron yet (nothing is imported here)."""
    sys.meta_path.insert(0, _PatchedOnImport(host_probes(root, instance_type, devices)))


# -- fixtures (import them into a conftest: `from neuron_stub import neuron_sdk_stub, no_neuron_sdk, stub_root`) -----


@pytest.fixture(scope="module")
def stub_root(tmp_path_factory) -> Path:
    """Where the stub's package metadata and child-process installer live (one folder per test module)."""
    return tmp_path_factory.mktemp("neuron_sdk_stub")


@pytest.fixture
def neuron_sdk_stub(stub_root, monkeypatch) -> Iterator[NeuronSDKStub]:
    """The stub SDK importable for one test; the optimum-neuron modules bound to it are dropped afterwards."""
    sdk = NeuronSDKStub(stub_root)
    sdk.install(monkeypatch)
    yield sdk
    sdk.uninstall()


@pytest.fixture
def no_neuron_sdk(monkeypatch) -> None:
    """No Neuron SDK at all, as on any host without AWS's packages."""
    monkeypatch.delenv(TARGET_ENV, raising=False)
    purge_modules(SDK_PACKAGES + BOUND_PREFIXES)
    assert importlib.util.find_spec("torch_neuronx") is None
