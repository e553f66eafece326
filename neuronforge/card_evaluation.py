"""What the pipeline measured about an artifact, for its model card: the Hub's `model-index` block and a table.

Built from the stage records of the run that publishes (assets/publish.py reads them): retrieval_eval (nDCG@10,
Recall@100, MRR@10 on a named corpus with its fingerprint), the export's verification (parity: cosine against the
source model), chat_smoke_eval (suite pass rate, tokens/s, time to first token). A figure is only claimed for the compile key
it was measured on; what was not measured is said in words (`not_evaluated`), never left to look like a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    type: str  # the Hub's metric id, e.g. "ndcg_at_10"
    name: str  # what a person reads, e.g. "nDCG@10"
    value: float


@dataclass(frozen=True)
class Evaluation:
    """One task on one dataset, with its metrics (one `model-index` result)."""

    task_type: str
    task_name: str
    dataset_type: str
    dataset_name: str
    metrics: tuple[Metric, ...]
    measured_by: str  # the stage that measured it
    dataset_split: str | None = None
    dataset_revision: str | None = None


@dataclass
class CardEvidence:
    """The evaluations to show, and one sentence per evaluation that could not be claimed for this build."""

    evaluations: list[Evaluation] = field(default_factory=list)
    not_evaluated: list[str] = field(default_factory=list)


def corpus_label(path: str | Path) -> str:
    """The corpus's name on the card: the built-in corpus by its nature, a user's by its file or folder name."""
    path = Path(path)
    if path.name == "stdlib" and path.parent.name == "corpus":
        return "neuronforge built-in corpus (Python standard library docstrings)"
    return path.stem if path.is_file() else path.name


def from_retrieval(record: Mapping[str, Any] | None, system: str, compile_key: str) -> CardEvidence:
    """`system` ("dense:<model>" / "sparse:<model>") from a retrieval_eval record, if it scored this compile key."""
    evidence = CardEvidence()
    if record is None:
        evidence.not_evaluated.append("Retrieval: not evaluated (retrieval_eval has not run on this data directory).")
        return evidence
    scored = (record.get("inputs") or {}).get(system) or {}
    if not record.get("evaluated"):
        evidence.not_evaluated.append(f"Retrieval: not evaluated ({record.get('reason', 'no judged queries')}).")
    elif scored.get("compile_key") != compile_key or system not in (record.get("results") or {}):
        evidence.not_evaluated.append(
            "Retrieval: not evaluated for this build (the last retrieval_eval scored another compile key)."
        )
    else:
        metrics = record["results"][system]
        evidence.evaluations.append(
            Evaluation(
                task_type="retrieval",
                task_name="Retrieval",
                dataset_type=corpus_label(record["corpus"]),
                dataset_name=f"{corpus_label(record['corpus'])} ({record.get('queries', '?')} judged queries)",
                dataset_split="test",
                dataset_revision=str(record["corpus_fingerprint"]),
                metrics=(
                    Metric("ndcg_at_10", "nDCG@10", round(float(metrics["ndcg@10"]), 4)),
                    Metric("recall_at_100", "Recall@100", round(float(metrics["recall@100"]), 4)),
                    Metric("mrr_at_10", "MRR@10", round(float(metrics["mrr@10"]), 4)),
                ),
                measured_by="retrieval_eval",
            )
        )
    return evidence


def from_parity(verification: Mapping[str, Any] | None, source_id: str) -> CardEvidence:
    """The export's parity with the source model: the verification record of this compile key (neuronforge/parity.py)."""
    evidence = CardEvidence()
    if verification is None:
        evidence.not_evaluated.append("Parity with the source model: not measured for this build.")
        return evidence
    scores = verification["scores"]
    evidence.evaluations.append(
        Evaluation(
            task_type="feature-extraction",
            task_name=f"Parity with {source_id} (plain sentence-transformers), run on {verification['device']}",
            dataset_type="neuronforge/parity-texts",
            dataset_name="neuronforge parity texts (mixed lengths)",
            metrics=(
                Metric("cosine_min", "min cosine", round(float(scores["min_cosine"]), 6)),
                Metric("cosine_mean", "mean cosine", round(float(scores["mean_cosine"]), 6)),
                Metric("max_abs_diff", "max |difference|", float(f"{float(scores['max_abs_diff']):.3g}")),
            ),
            measured_by="export check matches_reference",
        )
    )
    return evidence


def from_chat(report: Mapping[str, Any] | None, compile_key: str, host: str) -> CardEvidence:
    """The chat smoke evaluation's pass rate and speed, if it ran on this compile key (`host`: where it ran)."""
    evidence = CardEvidence()
    if report is None or report.get("compile_key") != compile_key:
        evidence.not_evaluated.append("Chat suite: not evaluated for this build.")
        return evidence
    total = int(report["n_conversations"])
    latency = report["latency"]
    suite = report.get("suite") or {}
    evidence.evaluations.append(
        Evaluation(
            task_type="text-generation",
            task_name=f"Chat smoke suite, greedy, on {host}",
            dataset_type="neuronforge/chat-prompt-suite",
            dataset_name=f"{suite.get('name', 'chat prompt suite')} ({total} conversations)",
            dataset_revision=suite.get("sha256"),
            metrics=(
                Metric("pass_rate", "conversations passed", round(int(report["n_passed"]) / max(total, 1), 4)),
                Metric("tokens_per_second", "tokens/s", round(float(latency["tokens_per_s"]), 1)),
                Metric("ttft_ms", "time to first token (ms)", round(float(latency["ttft_ms"]), 1)),
            ),
            measured_by="chat_smoke_eval",
        )
    )
    return evidence


def combine(*parts: CardEvidence) -> CardEvidence:
    return CardEvidence([e for p in parts for e in p.evaluations], [line for p in parts for line in p.not_evaluated])


def model_index(model_name: str, evaluations: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """The `model-index` front-matter block, built by huggingface_hub so the Hub parses it as eval results."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    results = [
        EvalResult(
            task_type=e.task_type,
            task_name=e.task_name,
            dataset_type=e.dataset_type,
            dataset_name=e.dataset_name,
            dataset_split=e.dataset_split,
            dataset_revision=e.dataset_revision,
            metric_type=m.type,
            metric_name=m.name,
            metric_value=m.value,
        )
        for e in evaluations
        for m in e.metrics
    ]
    return eval_results_to_model_index(model_name, results) if results else []


def evaluation_markdown(evidence: CardEvidence) -> str:
    lines = ["| task | dataset | metric | value | measured by |", "|---|---|---|---:|---|"]
    for e in evidence.evaluations:
        dataset = e.dataset_name + (f", fingerprint `{e.dataset_revision}`" if e.dataset_revision else "")
        lines += [f"| {e.task_name} | {dataset} | {m.name} | {m.value:g} | {e.measured_by} |" for m in e.metrics]
    text = "\n".join(lines) if evidence.evaluations else "Nothing was measured for this build."
    return "\n".join([text, "", *[f"- {line}" for line in evidence.not_evaluated]]).rstrip()
