"""Small pieces every model-running asset shares."""

from pathlib import Path
from typing import Any

import dagster as dg

from neuronforge.artifacts import read_manifest
from neuronforge.registry import ModelSpec
from resources.storage import StorageResource


def current_artifact(storage: StorageResource, model: str) -> tuple[Path, dict[str, Any]]:
    """The artifact folder the model's export asset last produced, and its manifest."""
    artifact_dir = Path(storage.read_pointer("export", model)["artifact_dir"])
    return artifact_dir, read_manifest(artifact_dir)


def cores_needed(spec: ModelSpec, manifest: dict[str, Any]) -> int:
    """A Neuron artifact runs on the cores it was compiled for; other backends take one slot."""
    return spec.tensor_parallel_size if manifest["backend"] == "neuron" else 1


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def png_markdown(figure: Any, alt: str) -> str:
    """Dagster has no image metadata type: embed the PNG as base64 in markdown."""
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def after_upstream_passes() -> dg.AutomationCondition:
    """Declarative automation for stages downstream of export: run when an upstream asset updates, but only once
    its blocking checks (e.g. export parity with the reference library) have passed."""
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
