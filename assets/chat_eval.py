"""chat_smoke_eval: play the prompt suite through the exported chat model and judge the run in the same step.

The asset emits its five checks itself (they only reread what it just computed, so none needs a step process of its
own): template_applied, replies_well_formed and expectations_met are blocking and gate publishing;
matches_golden_outputs and latency_vs_last_run WARN.
"""

import inspect
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.common import (
    ROW_COUNT,
    code_version_metadata,
    cores_needed,
    exported_artifact,
    metadata_table,
    plot_metadata,
    stage_asset,
    stage_inputs,
)
from neuronforge import plots
from neuronforge.artifacts import sha256_file, stable_hash
from neuronforge.chat import DEFAULT_SUITE, GenerationOptions
from neuronforge.paths import REPO_ROOT
from neuronforge.progress import Progress
from neuronforge.registry import ModelSpec
from resources.devices import NeuronResource
from resources.storage import StorageResource, record_metadata

GOLDEN_DIR = REPO_ROOT / "evals" / "golden"


class ChatEvalConfig(dg.Config, GenerationOptions):
    """Run options (the Launchpad shows them): the decoding options of `GenerationOptions` — greedy by default so
    golden outputs are comparable — plus the suite, the golden replies and the latency tolerance."""

    suite: str = Field(default=str(DEFAULT_SUITE), description="Prompt suite YAML (see evals/chat_prompts.yaml).")
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


# ------------------------------------------------------------------------ the checks, judged from the run's report


def _turns(report: dict[str, Any]):
    for conversation in report["conversations"]:
        for turn in conversation["turns"]:
            if turn["reply"] is not None or turn["failures"]:
                yield conversation["id"], turn


def template_applied(report: dict[str, Any]) -> dg.AssetCheckResult:
    """Every prompt was rendered with the chat template and no template token leaked into a reply."""
    turns = list(_turns(report))
    problems = [f"{cid} turn {t['index']}: {f}" for cid, t in turns for f in t["failures"] if "template" in f]
    return dg.AssetCheckResult(
        check_name="template_applied",
        passed=not problems,
        description=f"{len(turns)} turns rendered with the tokenizer's chat template; template problems: "
        f"{len(problems)} (0 allowed){': ' + problems[0] if problems else ''}.",
        metadata={"turns": len(turns), "problems": dg.MetadataValue.json(problems)},
    )


def replies_well_formed(report: dict[str, Any]) -> dg.AssetCheckResult:
    """Every generated reply is non-empty and stopped at EOS or at its token limit."""
    problems = []
    turns = list(_turns(report))
    for cid, turn in turns:
        if turn["reply"] is None:
            problems.append(f"{cid} turn {turn['index']}: no reply ({'; '.join(turn['failures'])})")
        elif not turn["reply"].strip():
            problems.append(f"{cid} turn {turn['index']}: empty reply")
        elif turn["stopped_at_eos"] is None:
            problems.append(f"{cid} turn {turn['index']}: unknown stop reason")
    return dg.AssetCheckResult(
        check_name="replies_well_formed",
        passed=not problems,
        description=f"{len(turns) - len(problems)} of {len(turns)} replies non-empty and stopped at EOS or their token "
        f"limit; all must be{': ' + problems[0] if problems else ''}.",
        metadata={"turns": len(turns), "problems": dg.MetadataValue.json(problems)},
    )


def expectations_met(report: dict[str, Any]) -> dg.AssetCheckResult:
    """Every conversation meets its must_contain / must_not_contain / stop expectations (gates publish)."""
    failed = {c["id"]: c["failures"] for c in report["conversations"] if not c["passed"]}
    total = len(report["conversations"])
    first = next(iter(failed.items()), None)
    return dg.AssetCheckResult(
        check_name="expectations_met",
        passed=not failed,
        description=f"{total - len(failed)} of {total} conversations met their must_contain / must_not_contain / stop "
        f"expectations; all must{f' ({first[0]}: {first[1][0]})' if first and first[1] else ''}.",
        metadata={"conversations": len(report["conversations"]), "failed": dg.MetadataValue.json(failed)},
    )


def matches_golden_outputs(report: dict[str, Any]) -> dg.AssetCheckResult:
    """Greedy replies equal the stored golden replies (a regression detector; WARN, since a new toolchain or
    dtype legitimately changes text)."""
    golden = report["golden"]
    if golden["recorded"] or golden.get("skipped"):
        # A golden recorded by the run it judges is not evidence; sampled replies have no golden to match.
        why = "recorded by this run (nothing to compare yet)" if golden["recorded"] else "sampling is on"
        return dg.AssetCheckResult(
            check_name="matches_golden_outputs",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"Not evaluated: the golden replies were {why}.",
            metadata={"evaluated": False, "golden": golden["path"], "recorded_now": golden["recorded"]},
        )
    compared = sum(len(c["turns"]) for c in report["conversations"])
    return dg.AssetCheckResult(
        check_name="matches_golden_outputs",
        passed=not golden["differences"],
        severity=dg.AssetCheckSeverity.WARN,
        description=f"Greedy replies against the golden replies in {Path(golden['path']).name}: "
        f"{len(golden['differences'])} of {compared} turns differ (0 expected).",
        metadata={
            "golden": golden["path"],
            "recorded_now": golden["recorded"],
            "differences": dg.MetadataValue.json(golden["differences"]),
        },
    )


def latency_vs_last_run(report: dict[str, Any]) -> dg.AssetCheckResult:
    """tokens/s, TTFT and inter-token latency within tolerance of the previous evaluation (WARN)."""
    if report.get("previous_record") is None:
        return dg.AssetCheckResult(
            check_name="latency_vs_last_run",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="Not evaluated: this is the model's first evaluation on this data directory.",
            metadata={"evaluated": False, **{k: float(v) for k, v in report["latency"].items()}},
        )
    latency = report["latency"]
    regressions = report["latency_regressions"]
    return dg.AssetCheckResult(
        check_name="latency_vs_last_run",
        passed=not regressions,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"tokens/s {latency['tokens_per_s']:.1f}, TTFT {latency['ttft_ms']:.0f} ms, inter-token "
        f"{latency['itl_ms']:.1f} ms against the previous evaluation {report['previous_record']}, tolerance "
        f"{report.get('latency_tolerance', 0.5):.0%}: {len(regressions)} regression(s)"
        f"{' (' + str(regressions[0]) + ')' if regressions else ''}.",
        metadata={
            "regressions": dg.MetadataValue.json(report["latency_regressions"]),
            "previous_record": report["previous_record"],
            **{k: float(v) for k, v in report["latency"].items()},
        },
    )


# (judge, blocking): a failed blocking check fails the asset's step, so publish does not run in that run.
CHAT_CHECKS = (
    (template_applied, True),
    (replies_well_formed, True),
    (expectations_met, True),
    (matches_golden_outputs, False),
    (latency_vs_last_run, False),
)


def chat_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(judge.__name__, asset=key, blocking=blocking, description=inspect.getdoc(judge))
        for judge, blocking in CHAT_CHECKS
    ]


def judge_report(report: dict[str, Any]) -> list[dg.AssetCheckResult]:
    """Every chat check's result for one evaluation report (the dict the asset writes to results.json)."""
    return [judge(report) for judge, _ in CHAT_CHECKS]


def conversations_table(result: Any) -> dg.MetadataValue:
    columns = [
        ("conversation", "string"),
        ("turns", "int"),
        ("prompt_tokens", "int"),
        ("output_tokens", "int"),
        ("ttft_ms", "float"),
        ("itl_ms", "float"),
        ("tokens_per_s", "float"),
        ("passed", "bool"),
        ("failures", "string"),
    ]
    rows = []
    for c in result.conversations:
        latency = c.latency()
        rows.append(
            [
                c.id,
                len(c.turns),
                c.prompt_tokens,
                c.output_tokens,
                round(latency["ttft_ms"], 1),
                round(latency["itl_ms"], 2),
                round(latency["tokens_per_s"], 2),
                bool(c.passed),
                "; ".join(c.failures),
            ]
        )
    return metadata_table(columns, rows)


# ------------------------------------------------------------------------------------------------------- the asset


def build_chat_eval_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "chat_smoke_eval"])

    @stage_asset(
        spec,
        "chat_smoke_eval",
        reads_corpus=False,
        kinds=set(),  # the backend the model runs on (stage_asset adds it)
        check_specs=chat_check_specs(key),
        description="Single- and multi-turn conversations through the exported model with its chat template and "
        "history truncated to the static sequence_length; TTFT, inter-token latency and tokens/s per conversation.",
    )
    def chat_smoke_eval(
        context: dg.AssetExecutionContext,
        config: ChatEvalConfig,
        storage: StorageResource,
        neuron: NeuronResource,
    ):
        from neuronforge import chat
        from neuronforge.artifacts import verify_manifest
        from neuronforge.backends import get_backend

        exported, artifact_dir, manifest = exported_artifact(context, storage, spec)
        verify_manifest(artifact_dir)
        conversations = chat.load_prompt_suite(config.suite)
        options = GenerationOptions.of(config)
        stage_dir = storage.stage_dir("chat_smoke_eval", spec.name)
        holder = f"{spec.name}/chat_smoke_eval run {context.run_id[:8]}"
        with neuron.lease(cores_needed(spec, manifest), holder=holder, log=context.log) as lease:
            # The backend that loaded the model owns its token loop (neuron: optimum-neuron's decoder contract).
            generator = get_backend(manifest["backend"]).load_generator(artifact_dir, manifest)
            context.log.info(f"{spec.name}: {len(conversations)} conversations from {config.suite}")
            with Progress(f"{spec.name}/chat_smoke_eval", "conversations", len(conversations), context.log) as progress:
                result = chat.run_suite(generator, conversations, options=options, progress=progress)
        report: dict[str, Any] = result.to_json()

        # Golden replies only mean something for deterministic decoding.
        deterministic = not options.do_sample
        path, committed = golden_path(config, spec.name, manifest["format"], stage_dir)
        if deterministic and not path.is_file() and not committed:
            chat.save_golden(path, result)
            report["golden"] = {"path": str(path), "recorded": True, "differences": []}
        elif deterministic and path.is_file():
            differences = chat.compare_to_golden(result, chat.load_golden(path))
            report["golden"] = {"path": str(path), "recorded": False, "differences": differences}
        else:
            report["golden"] = {"path": str(path), "recorded": False, "differences": [], "skipped": True}

        # Latency is compared with the last evaluation of this model on this host, whatever its inputs.
        previous = storage.current_record(key)
        report["latency_tolerance"] = config.latency_tolerance
        report["latency_regressions"] = (
            chat.latency_regressions(result.latency(), previous["latency"], config.latency_tolerance)
            if previous is not None
            else []
        )
        report["previous_record"] = previous.key if previous is not None else None
        report["latency"] = result.latency()
        report["compile_key"] = manifest["compile_key"]
        suite_hash = sha256_file(Path(config.suite))
        report["suite"] = {"name": Path(config.suite).name, "sha256": suite_hash}  # named on the model card
        # Keyed by what produced it (artifact, suite, options); a re-run with the same inputs replaces it.
        record = storage.write_record(key, stable_hash([exported.key, suite_hash, options.model_dump()]), report)
        # The data version follows what the model said, not how fast: an unchanged model does not look new.
        replies = [[c["id"], c["passed"], [t["reply"] for t in c["turns"]]] for c in report["conversations"]]

        latency = result.latency()
        return dg.MaterializeResult(
            metadata={
                "conversations": len(conversations),
                "passed": result.n_passed,
                "tokens_per_s": latency["tokens_per_s"],
                "ttft_ms": latency["ttft_ms"],
                "itl_ms": latency["itl_ms"],
                "warm_up_ms": round(1000 * (result.warm_up_s or 0.0), 1),
                "summary": dg.MetadataValue.md(result.summary_markdown()),
                ROW_COUNT: dg.MetadataValue.int(len(result.conversations)),
                "conversations_table": conversations_table(result),
                **plot_metadata(
                    "latency_per_conversation",
                    plots.latency_bars(
                        [(c.id, c.latency()["ttft_ms"], c.latency()["tokens_per_s"]) for c in result.conversations]
                    ),
                    "TTFT and tokens/s per conversation",
                ),
                **record_metadata(record),
                **code_version_metadata(context, stage_inputs("chat_smoke_eval")),
                "golden": str(path),
                **lease.metadata(),
            },
            check_results=judge_report(report),
            data_version=dg.DataVersion(stable_hash(replies)),
        )

    return chat_smoke_eval
