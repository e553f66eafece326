"""Keep third-party noise out of the step logs, in a debug log file instead.

A step's stderr (the UI's stderr tab, the `make run` console) filled up with torch/ONNX exporter warnings, deprecation
notices from transformers and upload progress bars drawn with terminal escape codes. `route_third_party_output`
(called when the definitions load, in every process that runs steps) sends them to `<data dir>/logs/third_party.log`:

- Python warnings raised from outside this project's packages (FutureWarning, UserWarning from torch.onnx, ...);
- log records of the noisy libraries' own loggers (torch, transformers, ...), which these libraries print through
  stream handlers they create at import: sys.stderr is wrapped before they are imported, and a write made by a
  logging handler for one of their records goes to the file;
- progress bars: huggingface_hub's, transformers' and plain tqdm's are switched off (HF_HUB_DISABLE_PROGRESS_BARS,
  TQDM_DISABLE); the steps log their own progress lines (neuronforge/progress.py).

Everything else — Dagster's own log lines, our messages, tracebacks — still reaches stderr untouched.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, TextIO

THIRD_PARTY_LOGGERS = (
    "torch",
    "transformers",
    "optimum",
    "onnxscript",
    "onnx",
    "onnxruntime",
    "sentence_transformers",
    "huggingface_hub",
    "accelerate",
    "gguf",
    "neuronx_distributed",
    "torch_neuronx",
)
OUR_PACKAGES = ("neuronforge", "assets", "resources", "pipelines", "bench", "tests")
LOG_NAME = "third_party.log"


def is_third_party_logger(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in THIRD_PARTY_LOGGERS)


def is_our_file(filename: str) -> bool:
    path = Path(filename)
    return "site-packages" not in path.parts and any(part in OUR_PACKAGES for part in path.parts)


class _DebugFile:
    """The debug log, opened on first use (appending), shared by the stream wrapper and the warnings hook."""

    def __init__(self, path: Path):
        self.path = path
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8", errors="replace")
            self._file.write(text)
            self._file.flush()


class ThirdPartyAwareStream:
    """sys.stderr, except that a logging handler's write of a third-party library's record goes to the debug file."""

    def __init__(self, stream: TextIO, debug: _DebugFile):
        self._stream = stream
        self._debug = debug

    def write(self, text: str) -> int:
        record = _record_being_emitted()
        if record is not None and is_third_party_logger(record.name):
            self._debug.write(text)
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...
        return getattr(self._stream, name)


def _record_being_emitted() -> logging.LogRecord | None:
    # logging.StreamHandler.emit(self, record) calls stream.write(...): the record is a local two frames up at most.
    frame = sys._getframe(2)
    for _ in range(3):
        if frame is None:
            return None
        record = frame.f_locals.get("record")
        if isinstance(record, logging.LogRecord):
            return record
        frame = frame.f_back
    return None


_installed: Path | None = None


def route_third_party_output(log_dir: Path) -> Path:
    """Install the routing (once per process); returns the debug log file."""
    global _installed
    if _installed is not None:
        return _installed
    debug = _DebugFile(Path(log_dir) / LOG_NAME)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub / transformers import
    os.environ.setdefault("TQDM_DISABLE", "1")  # plain tqdm bars too (transformers' GGUF loader draws one)
    if not isinstance(sys.stderr, ThirdPartyAwareStream):
        sys.stderr = ThirdPartyAwareStream(sys.stderr, debug)
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' API)
        if is_our_file(str(filename)):
            show(message, category, filename, lineno, file, line)
        else:
            debug.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = showwarning
    _installed = debug.path
    return debug.path
