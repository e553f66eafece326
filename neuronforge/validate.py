"""`neuronforge-validate`: check the exported Neuron artifacts on a real inf2/trn1/trn2 host.

    neuronforge-validate [--data-dir DIR] [--models models.yaml] [--model NAME ...] [--json REPORT] [--dry-run]
    neuronforge-validate --check-sdk

It prints the host's NeuronCores (neuron-ls and what a lease can draw from), then for each model whose current export
is a Neuron artifact: leases the cores it was compiled for, loads it in a child process that holds them (the Neuron
runtime keeps its cores until its process exits, so each artifact gets a fresh process), runs one static batch and
the parity check (encoders) or one chat turn (decoders), and reports load time and latencies as a table and as JSON.
A passed or failed parity check is written as the artifact's verification record, which publishing waits for.

On a host without a Neuron device (or without the Neuron SDK) it says so and exits 2. `--dry-run` prints the plan
anywhere: which artifacts, how many cores, whether they fit the instance, what would run. `--check-sdk` verifies
that the installed Neuron SDK is the one requirements-neuron-sdk.txt pins (not PyPI's placeholders) and imports.
Exit codes: 0 all passed, 1 a check failed, 2 this host cannot run Neuron artifacts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuronforge.paths import REPO_ROOT, data_dir
from neuronforge.records import RecordStore

EXIT_OK, EXIT_FAILED, EXIT_NO_NEURON = 0, 1, 2
SDK_REQUIREMENTS = REPO_ROOT / "requirements-neuron-sdk.txt"
CHAT_TURN = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
CHAT_NEW_TOKENS = 16
_NEURON_LS = ("neuron-ls", "/opt/aws/neuron/bin/neuron-ls")


@dataclass
class Step:
    """One artifact's validation: what it is, and what running it measured."""

    model: str
    kind: str
    compile_key: str
    artifact_dir: str
    cores: int
    status: str = "planned"  # planned | passed | failed | skipped | error
    detail: str = ""
    load_s: float | None = None
    first_batch_ms: float | None = None  # encoders: the first batch after loading (graphs onto the cores)
    batch_ms: float | None = None  # encoders: a second, warm batch
    min_cosine: float | None = None
    threshold: str | None = None
    ttft_ms: float | None = None  # chat: prefill + first token
    itl_ms: float | None = None  # chat: mean gap between later tokens
    tokens_per_s: float | None = None
    reply: str | None = None
    plan: list[str] = field(default_factory=list)


def neuron_ls_text() -> str:
    """neuron-ls's own table, or a line saying it is missing."""
    exe = next((p for p in (shutil.which(_NEURON_LS[0]), _NEURON_LS[1]) if p and Path(p).exists()), None)
    if exe is None:
        return "neuron-ls: not installed (aws-neuronx-tools)"
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"neuron-ls: could not run ({exc})"
    return (out.stdout or out.stderr).rstrip()


def inventory_lines() -> list[str]:
    from neuronforge.devices import NeuronDiscoveryError, discover

    lines = [neuron_ls_text()]
    try:
        inv = discover("neuron")
    except NeuronDiscoveryError as exc:
        return [*lines, f"leasable NeuronCores: none ({exc})"]
    lines.append(
        f"leasable NeuronCores: {inv.total} ({inv.detail or inv.source}), instance {inv.instance_type or 'unknown'}"
    )
    return lines + [f"warning: {w}" for w in inv.warnings]


def plan(root: Path, registry_path: Path | None, names: list[str] | None) -> list[Step]:
    """The current export of each model; Neuron artifacts are validated, the rest listed as skipped."""
    from neuronforge.artifacts import ManifestError, read_manifest
    from neuronforge.registry import load_registry

    registry = load_registry(registry_path, check_builtin_limits=False)
    records = RecordStore(root)
    steps = []
    for spec in registry.models:
        if names and spec.name not in names:
            continue
        record = records.current_or_none("export", spec.name)
        if record is None:
            steps.append(Step(spec.name, spec.kind, "-", "-", 0, "skipped", f"not exported under {root}"))
            continue
        try:
            manifest = read_manifest(record.path_of("artifact_dir"))
        except ManifestError as exc:
            steps.append(Step(spec.name, spec.kind, record.key, record["artifact_dir"], 0, "error", str(exc)))
            continue
        cores = int((manifest.get("options") or {}).get("tensor_parallel_size") or 1)
        step = Step(spec.name, spec.kind, record.key, record["artifact_dir"], cores)
        if manifest["backend"] != "neuron":
            step.status, step.detail = "skipped", f"not a Neuron artifact (backend {manifest['backend']})"
        else:
            step.plan = _step_plan(spec, manifest, record.get("source_path"), cores)
        steps.append(step)
    if names and not steps:
        raise SystemExit(f"neuronforge-validate: no model named {', '.join(names)} in {registry.path}")
    return steps


def _step_plan(spec: Any, manifest: dict[str, Any], source_path: str | None, cores: int) -> list[str]:
    from neuronforge.instances import InstanceFitError, check_fits

    lines = [
        f"lease {cores} NeuronCore{'s' if cores > 1 else ''}; load {(manifest.get('neuron') or {}).get('loader', '?')}"
    ]
    if spec.kind == "chat":
        lines.append(f"warm up, then one chat turn of up to {CHAT_NEW_TOKENS} new tokens (TTFT, inter-token latency)")
    else:
        shapes = manifest["shapes"]
        lines.append(f"two batches of {shapes['batch_size']}x{shapes['sequence_length']} (first and warm latency)")
        lines.append("parity with the reference library; write the verification record")
    if source_path and Path(source_path).is_dir():
        try:
            estimate = check_fits(spec, Path(source_path))
            lines.append(f"fits: {estimate.describe()}" if estimate.params else "fits: no config to estimate from")
        except InstanceFitError as exc:
            lines.append(f"does not fit: {exc}")
    return lines


def run_step(step: Step, root: Path, source_path: str | None) -> Step:
    """Validate one artifact in this process (the worker): it must hold the leased cores, nothing else."""
    from neuronforge.artifacts import verify_manifest
    from neuronforge.backends import get_backend

    artifact_dir = Path(step.artifact_dir)
    manifest = verify_manifest(artifact_dir)
    backend = get_backend("neuron")
    started = time.perf_counter()
    if step.kind == "chat":
        generator = backend.load_generator(artifact_dir, manifest)
        step.load_s = time.perf_counter() - started
        generator.warm_up()
        ids = generator.tokenizer.apply_chat_template(CHAT_TURN, add_generation_prompt=True)
        (reply,) = generator.generate([ids], max_new_tokens=CHAT_NEW_TOKENS)
        step.ttft_ms, step.itl_ms = reply.ttft_s * 1e3, reply.inter_token_latency_s * 1e3
        step.tokens_per_s, step.reply = reply.tokens_per_s, reply.text
        step.status, step.detail = "passed", f"{reply.output_tokens} tokens"
        return step

    from neuronforge.backends import load_encoder
    from neuronforge.backends.heads import reference_encode
    from neuronforge.parity import PARITY_TEXTS, record_verification, row_cosines, tolerance_for

    encoder = load_encoder(artifact_dir)
    step.load_s = time.perf_counter() - started
    timings = []
    for _ in range(2):
        begun = time.perf_counter()
        got = encoder.encode(PARITY_TEXTS)
        timings.append((time.perf_counter() - begun) * 1e3)
    step.first_batch_ms, step.batch_ms = timings
    if not source_path or not Path(source_path).is_dir():
        step.status, step.detail = "error", f"the source model {source_path} is gone; materialize the export again"
        return step
    want = reference_encode(step.kind, Path(source_path), PARITY_TEXTS, manifest["shapes"]["sequence_length"])
    cosine = row_cosines(got, want)
    scores = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}
    tolerance = tolerance_for(manifest)
    verification = record_verification(
        RecordStore(root), step.model, manifest, scores, evaluated_by="neuronforge-validate", device="neuron"
    )
    step.min_cosine, step.threshold = scores["min_cosine"], tolerance.describe()
    step.status = "passed" if verification["passed"] else "failed"
    step.detail = f"verification: {verification.path}"
    return step


def run_leased(step: Step, root: Path, source_path: str | None) -> Step:
    """Lease the step's cores and validate it in a child process, which releases them by exiting."""
    from neuronforge.devices import CoreAllocator, CoreLeaseError

    try:
        # scope="children": held while the child runs; the child's runtime frees the cores when it exits.
        allocator = CoreAllocator(device="neuron", wait_timeout_s=600)
        with allocator.lease(step.cores, holder=f"validate {step.model}", scope="children"):
            payload = json.dumps({"step": asdict(step), "root": str(root), "source_path": source_path})
            out = subprocess.run(
                [sys.executable, "-m", "neuronforge.validate", "--worker", payload], capture_output=True, text=True
            )
    except CoreLeaseError as exc:
        step.status, step.detail = "error", f"could not lease {step.cores} cores: {exc}"
        return step
    last = (out.stdout.strip().splitlines() or [""])[-1]
    try:
        return Step(**json.loads(last))
    except (ValueError, TypeError):
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        step.status, step.detail = "error", f"worker exited {out.returncode}: {tail}"
        return step


def table(steps: list[Step]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = ["model", "kind", "cores", "status", "load s", "batch ms", "warm ms", "min cos", "TTFT ms", "ITL ms",
              "tok/s", "detail"]  # fmt: skip
    rows = [
        [
            s.model,
            s.kind,
            str(s.cores),
            s.status,
            num(s.load_s, ".1f"),
            num(s.first_batch_ms, ".1f"),
            num(s.batch_ms, ".1f"),
            num(s.min_cosine, ".6f"),
            num(s.ttft_ms, ".1f"),
            num(s.itl_ms, ".1f"),
            num(s.tokens_per_s, ".1f"),
            s.detail,
        ]  # fmt: skip
        for s in steps
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def check_sdk() -> int:
    """The installed Neuron SDK is requirements-neuron-sdk.txt's, not PyPI's placeholders, and it imports."""
    from neuronforge.backends import neuron_host_problem
    from neuronforge.backends.base import package_version

    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", SDK_REQUIREMENTS.read_text(), re.MULTILINE))
    wrong = [f"{name} {package_version(name) or 'missing'} (want {want})" for name, want in pins.items()
             if package_version(name) != want]  # fmt: skip
    if wrong:
        print(
            f"neuronforge-validate: the Neuron SDK does not match {SDK_REQUIREMENTS.name}: {'; '.join(wrong)}. "
            "Install it from AWS's repository (make setup-neuron); PyPI's packages of these names are placeholders."
        )
        return EXIT_FAILED
    probe = subprocess.run([sys.executable, "-c", "import torch_neuronx, neuronxcc"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"neuronforge-validate: the Neuron SDK is installed but does not import: {probe.stderr.strip()[-500:]}")
        return EXIT_FAILED
    print(f"Neuron SDK: {', '.join(f'{n} {v}' for n, v in pins.items())}; imports")
    problem = neuron_host_problem()
    print("Neuron device: " + (problem or "present"))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="the pipeline's data directory (default: NEURONFORGE_HOME)")
    parser.add_argument("--models", type=Path, help="models.yaml (default: the repository's)")
    parser.add_argument("--model", action="append", help="validate only this model (repeatable)")
    parser.add_argument("--json", type=Path, help="write the report here (default: <data dir>/validate/report.json)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit; runs on any host")
    parser.add_argument("--check-sdk", action="store_true", help="check the installed Neuron SDK and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # the child process of run_leased: one artifact, its result as the last stdout line
        job = json.loads(args.worker)
        step = Step(**job["step"])
        try:
            step = run_step(step, Path(job["root"]), job["source_path"])
        except Exception as exc:  # reported in the table, with the error's own words
            step.status, step.detail = "error", f"{type(exc).__name__}: {exc}"
        print(json.dumps(asdict(step)))
        return EXIT_OK
    if args.check_sdk:
        return check_sdk()

    from neuronforge.backends import neuron_host_problem

    root = (args.data_dir or data_dir()).resolve()
    steps = plan(root, args.models, args.model)
    problem = neuron_host_problem()
    print("\n".join(inventory_lines()))
    if args.dry_run:
        print(f"\nPlan (data directory {root}):")
        for step in steps:
            print(f"- {step.model} ({step.kind}, {step.compile_key}): {step.detail or step.artifact_dir}")
            for line in step.plan:
                print(f"    {line}")
        if problem:
            print(f"\nThis host cannot run them: {problem}. Run neuronforge-validate on an inf2/trn1/trn2 host.")
        return EXIT_OK
    if problem:
        print(
            f"\nneuronforge-validate: this host cannot run Neuron artifacts: {problem}. Run it on an inf2/trn1/trn2 "
            "host with the Neuron SDK (make setup-neuron); --dry-run prints the plan here."
        )
        return EXIT_NO_NEURON

    sources = {s.model: RecordStore(root).current("export", s.model).get("source_path") for s in steps if s.plan}
    results = [run_leased(s, root, sources[s.model]) if s.status == "planned" else s for s in steps]
    print("\n" + table(results))
    report = args.json or root / "validate" / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"host": os.uname().nodename, "steps": [asdict(s) for s in results]}, indent=2))
    print(f"\nreport: {report}")
    failed = [s for s in results if s.status in ("failed", "error")]
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
