"""Third-party warnings and library log lines go to the debug log, not to the step's stderr; ours still show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, sys, warnings
from neuronforge.quiet import route_third_party_output
log_file = route_third_party_output(sys.argv[1])

# A library that creates its stream handler at import, after the routing (as torch and transformers do).
torch_log = logging.getLogger("torch.onnx._internal.exporter._registration")
handler = logging.StreamHandler()
handler.setFormatter(logging.Formatter("W %(message)s"))
logging.getLogger("torch").addHandler(handler)
torch_log.warning("torchvision is not installed. Skipping torchvision::nms")

ours = logging.getLogger("dagster")
ours.addHandler(logging.StreamHandler())
ours.warning("dagster - INFO - step started")

warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, "/x/lib/python3.11/copyreg.py", 105)
warnings.warn_explicit("axis name batch will not be used", UserWarning, "/v/site-packages/torch/onnx/_onnx_program.py", 486)
warnings.warn_explicit("a corpus file was skipped", UserWarning, "/repo/neuronforge/corpus/readers.py", 10)
print("log:", log_file, file=sys.stderr)
"""


def test_third_party_output_goes_to_the_debug_log(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "logs")], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    debug = (tmp_path / "logs" / "third_party.log").read_text()
    assert "torchvision is not installed" in debug and "torchvision" not in done.stderr
    assert "LeafSpec" in debug and "axis name batch" in debug
    assert "LeafSpec" not in done.stderr and "axis name batch" not in done.stderr
    # What is ours (Dagster's lines, our warnings, plain prints) stays on stderr.
    assert "dagster - INFO - step started" in done.stderr
    assert "a corpus file was skipped" in done.stderr
    assert "log: " in done.stderr
