"""The stub SDK's child-process installer (tests/neuron_stub.py's sitecustomize.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from neuron_stub import NeuronSDKStub


def test_a_child_gets_the_stub_sdk_and_still_runs_the_sitecustomize_it_shadows(tmp_path):
    root = NeuronSDKStub(tmp_path / "sdk").root
    other = tmp_path / "site"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['SHADOWED_SITECUSTOMIZE_RAN'] = 'yes'\n")
    probe = (
        "import importlib.util, os; "
        "print(os.environ.get('SHADOWED_SITECUSTOMIZE_RAN'), importlib.util.find_spec('torch_neuronx') is not None)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(other)])}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["yes", "True"]
