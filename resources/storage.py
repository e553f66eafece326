"""Where stage outputs live on disk, and the pointers that tell the next stage (and the CLI) which one is current.

Layout under the data directory (NEURONFORGE_HOME, default .neuronforge/):
  artifacts/<model>/<compile_key>/   exported artifact folders (immutable once written)
  stages/<stage>/<name>/             other stage outputs (embeddings, index, eval results)
  pointers/<stage>/<name>.json       the current output of a stage, replaced atomically when the stage finishes
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from neuronforge.artifacts import write_json_atomic
from neuronforge.paths import data_dir


class PointerMissingError(LookupError):
    """A stage's input has not been materialized yet."""


class StorageResource(dg.ConfigurableResource):
    """The project's data directory. `root` defaults to NEURONFORGE_HOME or .neuronforge/ in the repository."""

    root: str | None = None

    @property
    def base(self) -> Path:
        base = Path(self.root).resolve() if self.root else data_dir()
        base.mkdir(parents=True, exist_ok=True)
        return base

    def path(self, *parts: str) -> Path:
        """A directory under the data directory, created on first use."""
        path = self.base.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifact_dir(self, model: str, compile_key: str) -> Path:
        return self.path("artifacts", model) / compile_key

    def stage_dir(self, stage: str, name: str) -> Path:
        return self.path("stages", stage, name)

    def write_pointer(self, stage: str, name: str, payload: dict[str, Any]) -> None:
        write_json_atomic(self.path("pointers", stage) / f"{name}.json", payload)

    def read_pointer(self, stage: str, name: str) -> dict[str, Any]:
        path = self.base / "pointers" / stage / f"{name}.json"
        if not path.is_file():
            raise PointerMissingError(
                f"no {stage} output for {name!r} under {self.base}; materialize {name}/{stage} first "
                "(`make run` materializes everything)"
            )
        return json.loads(path.read_text())
