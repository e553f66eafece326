"""Where neuronforge keeps its state: one data directory, NEURONFORGE_HOME (default: <repo>/.neuronforge)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The project's data directory; created on first use."""
    root = Path(os.environ.get("NEURONFORGE_HOME", REPO_ROOT / ".neuronforge")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(*parts: str) -> Path:
    """A directory under the data directory (artifacts, hub, corpus, cache, locks...), created on first use."""
    path = data_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
