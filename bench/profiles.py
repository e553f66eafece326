"""Short profiles attached to rows that miss their target: where the time goes on each side."""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def onnx_op_profile(encoder: Any, texts: Sequence[str], top: int = 8) -> str:
    """onnxruntime's per-operator time for `encoder.encode(texts)`, with a profiling session swapped in."""
    import onnxruntime as ort

    from neuronforge.backends.onnx import onnx_file

    runner = encoder.runner
    original = runner.session
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        runner.session = ort.InferenceSession(
            str(Path(encoder.artifact_dir) / onnx_file(encoder.manifest)), options, providers=["CPUExecutionProvider"]
        )
        try:
            encoder.encode(list(texts), truncate=False)
            trace = json.loads(Path(runner.session.end_profiling()).read_text())
        finally:
            runner.session = original
    per_op: collections.Counter[str] = collections.Counter()
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1
    lines = [f"onnxruntime kernels, {len(texts)} texts ({total / 1e6:.2f} s of kernel time):"]
    lines += [f"  {op:<26} {us / total:6.1%}" for op, us in per_op.most_common(top)]
    return "\n".join(lines)


def torch_op_profile(fn: Callable[[], Any], top: int = 8) -> str:
    """torch.profiler's top CPU operators (self time) while running `fn` once."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    keep = [line for line in table.splitlines() if line.strip() and not line.startswith("-")]
    return "torch operators (self CPU time):\n" + "\n".join("  " + line[:110] for line in keep)
