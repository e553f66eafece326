"""Run one model-card snippet as a user's fresh Python would, on a fake Neuron host with the stub Neuron SDK.

    python tests/run_card_snippet.py SNIPPET.py WORK_DIR RESULT.json [INSTANCE_TYPE]

Nothing Hugging Face is imported before the snippet runs, so the snippet's own HF_ENDPOINT line decides which Hub it
talks to. The values the snippets compute (`embeddings`, `weights`, `reply`) are written to RESULT.json.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402  (after the path: the stub modules live beside this file)
from neuron_stub import NeuronSDKStub, fake_neuron_host_on_import  # noqa: E402

RESULTS = ("embeddings", "weights", "reply")


def main(snippet: str, work: str, result: str, instance_type: str = "inf2.xlarge") -> None:
    work_dir = Path(work)
    NeuronSDKStub(work_dir / "sdk").install(pytest.MonkeyPatch(), probe_torch_xla_first=False)
    fake_neuron_host_on_import(work_dir / "host", instance_type)
    if "huggingface_hub" in sys.modules:
        raise SystemExit("huggingface_hub was imported before the snippet: its HF_ENDPOINT line would be ignored")
    namespace = runpy.run_path(snippet, run_name="__main__")
    values = {}
    for name in RESULTS:
        if name in namespace:
            value = namespace[name]
            values[name] = value.detach().float().tolist() if hasattr(value, "detach") else value
    Path(result).write_text(json.dumps(values))


if __name__ == "__main__":
    main(*sys.argv[1:])
