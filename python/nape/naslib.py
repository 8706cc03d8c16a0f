"""A predictor with NASLib's shape (``fit(xtrain, ytrain)``, ``query(xtest)``), so nape drops
into NASLib-style experiment code. The x are ONNX paths, ONNX bytes, or ``nn.Module``s (give
``example_input``): modules are exported once into the predictor's work folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import _api


class NapePredictor:
    """Zero-shot until ``fit``: ``query`` ranks with ``model``. ``fit`` fine-tunes ``model`` on
    the labelled networks (``nape finetune --labels``), and ``query`` then predicts in their
    units. Needs at least 3 labelled networks."""

    def __init__(
        self,
        model: str = "default",
        *,
        example_input: Any = None,
        workdir: Optional[os.PathLike] = None,
        epochs: int = 60,
        lr: float = 3e-4,
        folds: int = 5,
        heads_only: bool = False,
        lower_is_better: bool = False,
        device: str = "cpu",
        progress: Optional[bool] = None,
    ) -> None:
        self.model = model
        self.example_input = example_input
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="nape-naslib-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)
        self.hyperparams: Dict[str, Any] = dict(
            epochs=epochs, lr=lr, folds=folds, heads_only=heads_only,
            lower_is_better=lower_is_better,
        )
        self.device = device
        self.progress = progress
        self.fitted: Optional[Dict[str, Any]] = None
        self._predictor = _api.Predictor(model, device=device)
        self._fits = 0

    def get_data_reqs(self) -> Dict[str, Any]:
        """What NASLib's evaluator must hand over: labelled architectures only."""
        return {
            "requires_partial_lc": False,
            "metric": None,
            "requires_hyperparameters": False,
            "hyperparams": None,
            "unlabeled": False,
            "unlabeled_factor": 0,
        }

    def pre_process(self) -> None:
        """Nothing to precompute: features are cached per file by content."""

    def set_hyperparams(self, params: Dict[str, Any]) -> None:
        self.hyperparams.update(params)

    def get_hyperparams(self) -> Dict[str, Any]:
        return dict(self.hyperparams)

    def fit(self, xtrain: Sequence[Any], ytrain: Sequence[float], train_info: Any = None) -> Dict[str, Any]:
        """Fine-tunes on (xtrain, ytrain); returns ``nape.finetune``'s report."""
        self._fits += 1
        name = f"naslib-fit{self._fits}"
        report = _api.finetune(
            (self._paths(xtrain), list(ytrain)),
            save_as=name,
            model=self.model,
            models=self.workdir / "models",
            runs=self.workdir / "runs",
            device=self.device,
            **self.hyperparams,
        )
        self._predictor = _api.Predictor(report["model_dir"], device=self.device)
        self.fitted = report
        return report

    def query(self, xtest: Sequence[Any], info: Any = None):
        """Predictions for xtest, in order, as a numpy array."""
        import numpy as np

        items = self._predictor.predict(self._paths(xtest), progress=self.progress)
        return np.array([it["prediction"] for it in items], dtype=float)

    def _paths(self, xs: Sequence[Any]) -> List[str]:
        return [self._path(x) for x in xs]

    def _path(self, x: Any) -> str:
        if isinstance(x, (str, os.PathLike)):
            return os.fspath(x)
        if isinstance(x, (bytes, bytearray)):
            data = bytes(x)
        elif hasattr(x, "forward"):
            if self.example_input is None:
                raise _api.UsageError("an nn.Module needs example_input=... to be exported")
            data = _api.export_torch(x, self.example_input)
        else:
            raise _api.UsageError(f"cannot read a network from {type(x).__name__}: give an ONNX path, bytes or an nn.Module")
        out = self.workdir / "networks" / f"{hashlib.md5(data).hexdigest()}.onnx"
        if not out.exists():
            _api._write_atomic(out, data)
        return str(out)
