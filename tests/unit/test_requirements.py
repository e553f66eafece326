"""The Neuron host's requirements: what optimum-neuron 0.4.5's `neuronx` extra asks for, the SDK only from AWS's
repository, and every other pin the same as requirements.txt (so the numpy-1.26 CI venv tests the same stack)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# Where the Neuron host must differ from requirements.txt, and why (requirements-neuron.txt says it too).
NEURON_DIFFERENCES = {
    "torch": "optimum-neuron[neuronx] pins torch 2.8.0.*",
    "torchvision": "optimum-neuron[neuronx] pins torchvision 0.23.*",
    "numpy": "optimum-neuron[neuronx] wants numpy <= 1.26.4",
    "protobuf": "optimum-neuron[neuronx] wants protobuf >= 3.20.3",
    "wheel": "optimum-neuron[neuronx] lists wheel",
    "pyarrow": "pyarrow 26 refuses numpy < 2 at import",
}
SDK = {"neuronx-cc", "torch-neuronx", "neuronx-distributed", "libneuronxla"}


def requirements(name: str) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def neuronx_extra() -> list[Requirement]:
    reqs = [Requirement(r) for r in importlib.metadata.requires("optimum-neuron") or []]
    return [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "neuronx"})]


def test_the_neuron_host_pins_what_optimum_neurons_neuronx_extra_asks_for():
    host, sdk = requirements("requirements-neuron.txt"), requirements("requirements-neuron-sdk.txt")
    extra = neuronx_extra()
    assert {canonicalize_name(r.name) for r in extra} >= SDK | {"torch", "numpy"}  # read the real metadata
    for req in extra:
        name = canonicalize_name(req.name)
        source = sdk if name in SDK else host
        assert name in source, f"{name} ({req}) is missing from the Neuron requirements"
        version = pinned(source[name])
        if version is not None:
            assert req.specifier.contains(version, prereleases=True), f"{name}=={version} does not satisfy {req}"
        else:  # an unpinned line must ask for what the extra asks for
            assert str(source[name].specifier) == str(req.specifier), f"{source[name]} is not {req}"


def test_the_sdk_comes_only_from_awss_repository_at_exact_versions():
    text = (REPO / "requirements-neuron-sdk.txt").read_text()
    assert re.search(r"^--extra-index-url https://pip\.repos\.neuron\.amazonaws\.com$", text, re.MULTILINE)
    sdk = requirements("requirements-neuron-sdk.txt")
    assert set(sdk) == SDK
    # PyPI's placeholders are neuronx-cc 1.0.post1, torch-neuronx 1.0, neuronx-distributed 0.1, libneuronxla 1.0:
    # an exact pin of AWS's version can never resolve to one of them.
    assert all(pinned(r) and pinned(r) not in ("1.0", "1.0.post1", "0.1") for r in sdk.values())
    for name in ("requirements.txt", "requirements-neuron.txt"):
        assert not SDK & set(requirements(name)), f"{name} must never name the Neuron SDK (PyPI placeholders)"


def test_every_other_pin_equals_requirements_txt():
    cpu, host = requirements("requirements.txt"), requirements("requirements-neuron.txt")
    assert set(host) - set(NEURON_DIFFERENCES) == set(cpu) - set(NEURON_DIFFERENCES)
    differing = {name for name in host.keys() & cpu.keys() if str(host[name]) != str(cpu[name])}
    assert differing <= set(NEURON_DIFFERENCES), f"pins that drifted from requirements.txt: {sorted(differing)}"
    assert pinned(host["numpy"]) == "1.26.4" and pinned(host["torch"]) == "2.8.0"
