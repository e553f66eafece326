"""chat_smoke_eval: play the prompt suite through the exported chat model; blocking checks gate its publishing."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.common import after_upstream_passes, cores_needed, current_artifact
from neuronforge.artifacts import write_json_atomic
from neuronforge.paths import REPO_ROOT
from neuronforge.registry import ModelSpec
from resources.devices import NeuronResource
from resources.storage import StorageResource

DEFAULT_SUITE = REPO_ROOT / "evals" / "chat_prompts.yaml"
GOLDEN_DIR = REPO_ROOT / "evals" / "golden"


class ChatEvalConfig(dg.Config):
    """Run options (the Launchpad shows them); greedy decoding by default so golden outputs are comparable."""

    suite: str = Field(default=str(DEFAULT_SUITE), description="Prompt suite YAML (see evals/chat_prompts.yaml).")
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int = 0
    golden: str | None = Field(
        default=None,
        description="Golden replies to compare with; default evals/golden/<model>-<format>.json, else the first "
        "greedy run's replies recorded in the data directory.",
    )
    latency_tolerance: float = Field(default=0.5, description="WARN when tokens/s or TTFT worsen by more than this.")


def golden_path(config: ChatEvalConfig, model: str, fmt: str, stage_dir: Path) -> tuple[Path, bool]:
    """(path, committed): the configured or repository golden file, else the data directory's recorded one."""
    if config.golden:
        return Path(config.golden), True
    committed = GOLDEN_DIR / f"{model}-{fmt}.json"
    return (committed, True) if committed.is_file() else (stage_dir / "golden.json", False)


def build_chat_eval_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "chat_smoke_eval"],
        deps=[dg.AssetKey([spec.name, "export"])],
        group_name=spec.name,
        kinds={"pytorch", "neuron"},
        pool="neuron",
        automation_condition=after_upstream_passes(),
        description="Single- and multi-turn conversations through the exported model with its chat template and "
        "history truncated to the static sequence_length; TTFT, inter-token latency and tokens/s per conversation.",
        tags={"model_kind": spec.kind},
    )
    def chat_smoke_eval(
        context: dg.AssetExecutionContext,
        config: ChatEvalConfig,
        storage: StorageResource,
        neuron: NeuronResource,
    ):
        from transformers import AutoTokenizer

        from neuronforge import chat
        from neuronforge.artifacts import verify_manifest
        from neuronforge.backends import get_backend

        artifact_dir, manifest = current_artifact(storage, spec.name)
        verify_manifest(artifact_dir)
        conversations = chat.load_prompt_suite(config.suite)
        options = chat.GenerationOptions(
            do_sample=config.do_sample,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
        )
        stage_dir = storage.stage_dir("chat_smoke_eval", spec.name)
        holder = f"{spec.name}/chat_smoke_eval run {context.run_id[:8]}"
        with neuron.lease(cores_needed(spec, manifest), holder=holder, log=context.log) as lease:
            model = get_backend(manifest["backend"]).load_causal_lm(artifact_dir, manifest)
            tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
            context.log.info(f"{spec.name}: {len(conversations)} conversations from {config.suite}")
            result = chat.run_suite(
                model,
                tokenizer,
                conversations,
                sequence_length=manifest["shapes"]["sequence_length"],
                options=options,
            )
        report: dict[str, Any] = result.to_json()

        # Golden replies only mean something for deterministic decoding.
        deterministic = not config.do_sample
        path, committed = golden_path(config, spec.name, manifest["format"], stage_dir)
        if deterministic and not path.is_file() and not committed:
            chat.save_golden(path, result)
            report["golden"] = {"path": str(path), "recorded": True, "differences": []}
        elif deterministic and path.is_file():
            differences = chat.compare_to_golden(result, chat.load_golden(path))
            report["golden"] = {"path": str(path), "recorded": False, "differences": differences}
        else:
            report["golden"] = {"path": str(path), "recorded": False, "differences": [], "skipped": True}

        results_file = stage_dir / "results.json"
        previous = json.loads(results_file.read_text()) if results_file.is_file() else None
        report["latency_regressions"] = (
            chat.latency_regressions(result.latency(), previous.get("latency", previous), config.latency_tolerance)
            if previous
            else []
        )
        report["latency"] = result.latency()
        report["compile_key"] = manifest["compile_key"]
        if previous is not None:
            write_json_atomic(stage_dir / "previous.json", previous)
        write_json_atomic(results_file, report)
        storage.write_pointer("chat_smoke_eval", spec.name, {"results": str(results_file)})

        latency = result.latency()
        return dg.MaterializeResult(
            metadata={
                "conversations": len(conversations),
                "passed": result.n_passed,
                "tokens_per_s": latency["tokens_per_s"],
                "ttft_ms": latency["ttft_ms"],
                "itl_ms": latency["itl_ms"],
                "summary": dg.MetadataValue.md(result.summary_markdown()),
                "results": dg.MetadataValue.path(str(results_file)),
                "golden": str(path),
                **lease.metadata(),
            }
        )

    return chat_smoke_eval


def _report(storage: StorageResource, model: str) -> dict[str, Any]:
    return json.loads(Path(storage.read_pointer("chat_smoke_eval", model)["results"]).read_text())


def _turns(report: dict[str, Any]):
    for conversation in report["conversations"]:
        for turn in conversation["turns"]:
            if turn["reply"] is not None or turn["failures"]:
                yield conversation["id"], turn


def build_chat_eval_checks(spec: ModelSpec) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey([spec.name, "chat_smoke_eval"])

    @dg.asset_check(asset=key, name="template_applied", blocking=True)
    def template_applied(storage: StorageResource) -> dg.AssetCheckResult:
        """Every prompt was rendered with the chat template and no template token leaked into a reply."""
        problems = [
            f"{cid} turn {t['index']}: {f}"
            for cid, t in _turns(_report(storage, spec.name))
            for f in t["failures"]
            if "template" in f
        ]
        return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

    @dg.asset_check(asset=key, name="replies_well_formed", blocking=True)
    def replies_well_formed(storage: StorageResource) -> dg.AssetCheckResult:
        """Every generated reply is non-empty and stopped at EOS or at its token limit."""
        problems = []
        for cid, turn in _turns(_report(storage, spec.name)):
            if turn["reply"] is None:
                problems.append(f"{cid} turn {turn['index']}: no reply ({'; '.join(turn['failures'])})")
            elif not turn["reply"].strip():
                problems.append(f"{cid} turn {turn['index']}: empty reply")
            elif turn["stopped_at_eos"] is None:
                problems.append(f"{cid} turn {turn['index']}: unknown stop reason")
        return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})

    @dg.asset_check(asset=key, name="expectations_met", blocking=True)
    def expectations_met(storage: StorageResource) -> dg.AssetCheckResult:
        """Every conversation meets its must_contain / must_not_contain / stop expectations (gates publish)."""
        report = _report(storage, spec.name)
        failed = {c["id"]: c["failures"] for c in report["conversations"] if not c["passed"]}
        return dg.AssetCheckResult(
            passed=not failed,
            metadata={
                "conversations": len(report["conversations"]),
                "failed": dg.MetadataValue.json(failed),
            },
        )

    @dg.asset_check(asset=key, name="matches_golden_outputs")
    def matches_golden_outputs(storage: StorageResource) -> dg.AssetCheckResult:
        """Greedy replies equal the stored golden replies (a regression detector; WARN, since a new toolchain or
        dtype legitimately changes text)."""
        golden = _report(storage, spec.name)["golden"]
        return dg.AssetCheckResult(
            passed=not golden["differences"],
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "golden": golden["path"],
                "recorded_now": golden["recorded"],
                "differences": dg.MetadataValue.json(golden["differences"]),
            },
        )

    @dg.asset_check(asset=key, name="latency_vs_last_run")
    def latency_vs_last_run(storage: StorageResource) -> dg.AssetCheckResult:
        """tokens/s, TTFT and inter-token latency within tolerance of the previous evaluation (WARN)."""
        report = _report(storage, spec.name)
        return dg.AssetCheckResult(
            passed=not report["latency_regressions"],
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "regressions": dg.MetadataValue.json(report["latency_regressions"]),
                **{k: float(v) for k, v in report["latency"].items()},
            },
        )

    return [template_applied, replies_well_formed, expectations_met, matches_golden_outputs, latency_vs_last_run]
