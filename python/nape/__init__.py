"""nape: predict the trained accuracy of a neural network from its ONNX file, in-process.

The Rust core (the ``nape`` CLI's crate) through PyO3: the same models, caches and numbers as
the CLI. Errors are ``NapeError`` and its subclasses, by nape's exit code: ``UsageError`` (2),
``DataError`` (3: missing data or I/O), ``OnnxError`` (4: invalid or unsupported ONNX); each
carries ``exit_code`` and nape's message, which names the file, node and op."""

import sys as _sys

# The extension links libtorch 2.11.0 (the CLI's, in .venv-torch). A process holds one libtorch:
# a torch of another version imported first would be the one nape's calls land in.
if "torch" in _sys.modules and not str(_sys.modules["torch"].__version__).startswith("2.11.0"):
    raise ImportError(
        f"nape is built against torch 2.11.0, but torch {_sys.modules['torch'].__version__} is "
        "already imported: one process holds one libtorch (see docs/python.md)"
    )

from ._nape import DEFAULT_MODEL, DataError, NapeError, OnnxError, UsageError, __version__
from ._api import (
    Predictor,
    export_torch,
    finetune,
    inspect,
    predict,
    predict_torch,
    proxies,
)
from .naslib import NapePredictor

NapeError.exit_code = 1
UsageError.exit_code = 2
DataError.exit_code = 3
OnnxError.exit_code = 4

__all__ = [
    "DEFAULT_MODEL",
    "DataError",
    "NapeError",
    "NapePredictor",
    "OnnxError",
    "Predictor",
    "UsageError",
    "__version__",
    "export_torch",
    "finetune",
    "inspect",
    "predict",
    "predict_torch",
    "proxies",
]
