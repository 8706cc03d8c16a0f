"""nape's functions for Python: each calls the Rust core in-process (``nape._nape``) and
returns what the CLI's ``--json`` prints for the same call, as dicts."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _nape
from ._nape import DataError, NapeError, OnnxError, UsageError

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Iterable[PathLike]]

#: Files per call into Rust for proxies: the progress bar moves between calls; inside one,
#: networks run in parallel on Rust's threads with the GIL released. A bar shows for more.
CHUNK = 64

_ERRORS = {2: UsageError, 3: DataError, 4: OnnxError}


def _raise_for(item: Dict[str, Any]) -> None:
    """Raises the exception of a failed entry (its class follows nape's exit code)."""
    code = item.get("exit_code", 1)
    err = _ERRORS.get(code, NapeError)(f"{item['file']}: {item['error']}")
    err.exit_code = code
    raise err


def _files(paths: Paths) -> List[str]:
    """ONNX files: each path as given, a folder searched recursively for .onnx files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: List[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.rglob("*.onnx")) if f.is_file())
        else:
            out.append(str(p))
    if not out:
        raise UsageError("no .onnx files found in the given paths")
    return out


def _progress(total: int, desc: str, show: Optional[bool]):
    """A tqdm bar on stderr when tqdm is there (and ``show`` is not False), else None."""
    if show is False or (show is None and total <= CHUNK):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="net")


def _chunked(call, files: List[str], desc: str, progress: Optional[bool]) -> List[Dict[str, Any]]:
    bar = _progress(len(files), desc, progress)
    out: List[Dict[str, Any]] = []
    try:
        for i in range(0, len(files), CHUNK):
            part = files[i : i + CHUNK]
            out.extend(json.loads(call(part)))
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    return out


def _finish(items: List[Dict[str, Any]], errors: str) -> List[Dict[str, Any]]:
    if errors not in ("raise", "keep"):
        raise UsageError(f"errors must be 'raise' or 'keep', not {errors!r}")
    if errors == "raise":
        for item in items:
            if not item["ok"]:
                _raise_for(item)
    return items


def inspect(
    source: Union[PathLike, bytes],
    *,
    input_shape: Optional[Sequence[int]] = None,
    strict: bool = False,
    name: str = "<bytes>",
    dims: Optional[Mapping[str, int]] = None,
) -> Dict[str, Any]:
    """The computation graph's summary of one ONNX file (a path, or the file's bytes):
    params, MACs, FLOPs, nodes, edges, depth, ops by kind, unknown ops, notes and the
    canonical graph's hash; the entry ``nape inspect --json`` prints. ``dims`` binds the dims
    the file leaves symbolic by name (``{"sequence": 128}``, ``--dim``); ``input_shape`` binds
    the first data input.

    Raises OnnxError (exit code 4) for a file nape cannot read as a network, DataError (3)
    for a missing one."""
    shape = list(input_shape) if input_shape is not None else None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return json.loads(_nape.inspect_bytes(bytes(source), name, shape, strict, _dims(dims)))
    return json.loads(_nape.inspect_file(os.fspath(source), shape, strict, _dims(dims)))


def _dims(dims: Optional[Mapping[str, int]]) -> Optional[List[Tuple[str, int]]]:
    """``dims`` as the (name, size) pairs the extension takes."""
    return None if dims is None else [(str(k), int(v)) for k, v in dims.items()]


class Predictor:
    """A loaded model: ``predict`` and ``predict_torch`` without reloading it.

    ``model`` is a model name ("default" is the bundled default), looked for under ``models``
    and then among the bundled models, or a model folder's path."""

    def __init__(
        self,
        model: str = "default",
        *,
        models: Optional[PathLike] = None,
        device: str = "cpu",
        input_shape: Optional[Sequence[int]] = None,
        data: Optional[PathLike] = None,
        dims: Optional[Mapping[str, int]] = None,
    ) -> None:
        name = _nape.DEFAULT_MODEL if model == "default" else os.fspath(model)
        self._inner = _nape.Predictor(
            name,
            os.fspath(models) if models is not None else None,
            device,
            list(input_shape) if input_shape is not None else None,
            os.fspath(data) if data is not None else None,
            _dims(dims),
        )
        #: The model: name, members, what it predicts, its training family, notes.
        self.info: Dict[str, Any] = json.loads(self._inner.header())

    def predict(
        self, paths: Paths, *, errors: str = "raise", progress: Any = None
    ) -> List[Dict[str, Any]]:
        """One dict per ONNX file (folders are searched): prediction, uncertainty, in_domain,
        params, flops; with ``errors="keep"`` a file that fails gives ``ok: False`` and its
        error instead of raising. ``progress``: None (a tqdm bar on stderr for more than
        CHUNK files, when tqdm is installed), True, False, or a callable taking a count."""
        files = _files(paths)
        # one call: the model sees the batch the CLI would (a network's last digits can move
        # by 1e-9 with its batch neighbours); the bar ticks from Rust as files are read
        bar = None if callable(progress) else _progress(len(files), "nape predict", progress)
        try:
            tick = progress if callable(progress) else bar.update if bar is not None else None
            items = json.loads(self._inner.predict_files(files, tick))
        finally:
            if bar is not None:
                bar.close()
        return _finish(items, errors)

    def predict_bytes(self, data: bytes, name: str = "<bytes>") -> Dict[str, Any]:
        """The prediction of one network given as ONNX bytes."""
        item = json.loads(self._inner.predict_bytes(bytes(data), name))
        return _finish([item], "raise")[0]

    def predict_torch(self, module: Any, example_input: Any, *, opset: int = 17) -> Dict[str, Any]:
        """Exports ``module`` in memory (``export_torch``) and predicts it."""
        data = export_torch(module, example_input, opset=opset)
        return self.predict_bytes(data, f"<{type(module).__name__}>")


_PREDICTORS: Dict[Tuple[Any, ...], Predictor] = {}
_LOCK = threading.Lock()


def _predictor(model: str, models, device: str, input_shape, dims) -> Predictor:
    """One loaded Predictor per (model, models, device, input shape, dims), reused across calls."""
    key = (model, os.fspath(models) if models else None, device, tuple(input_shape or ()),
           tuple(sorted((dims or {}).items())))
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = Predictor(
                model, models=models, device=device, input_shape=input_shape, dims=dims
            )
        return _PREDICTORS[key]


def predict(
    paths: Paths,
    model: str = "default",
    *,
    models: Optional[PathLike] = None,
    device: str = "cpu",
    input_shape: Optional[Sequence[int]] = None,
    errors: str = "raise",
    progress: Any = None,
    dims: Optional[Mapping[str, int]] = None,
) -> List[Dict[str, Any]]:
    """Predicted accuracy of ONNX files: ``nape predict --json``'s entries (prediction,
    uncertainty, in_domain, params, flops), one per file, in order. What the model predicts
    is ``Predictor(model).info["predicts"]``. The model is loaded once and kept."""
    return _predictor(model, models, device, input_shape, dims).predict(
        paths, errors=errors, progress=progress
    )


def export_torch(
    module: Any, example_input: Any, path: Optional[PathLike] = None, *, opset: int = 17
) -> bytes:
    """The ONNX bytes of ``module`` in eval mode, exported by PyTorch's TorchScript exporter
    in memory (BatchNorm folded, as nape reads every exporter's file to one canonical graph);
    written atomically to ``path`` too when given. The module's training flag is restored."""
    import torch

    args = example_input if isinstance(example_input, tuple) else (example_input,)
    was_training = module.training
    buf = io.BytesIO()
    try:
        module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                args,
                buf,
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["output"],
            )
    finally:
        module.train(was_training)
    data = buf.getvalue()
    if path is not None:
        _write_atomic(Path(path), data)
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def predict_torch(
    module: Any,
    example_input: Any,
    model: str = "default",
    *,
    models: Optional[PathLike] = None,
    device: str = "cpu",
    opset: int = 17,
) -> Dict[str, Any]:
    """Predicts an ``nn.Module`` in one call: exported in memory with ``example_input`` (a
    tensor, or a tuple of them), then predicted as ``predict`` predicts its file."""
    p = _predictor(model, models, device, None, None)
    return p.predict_torch(module, example_input, opset=opset)


def proxies(
    paths: Paths,
    names: Union[str, Sequence[str]] = "all",
    images: Optional[PathLike] = None,
    *,
    seed: int = 0,
    batch: Optional[int] = None,
    data: Optional[PathLike] = None,
    errors: str = "raise",
    progress: Optional[bool] = None,
    input_shape: Optional[Sequence[int]] = None,
    dims: Optional[Mapping[str, int]] = None,
    folded_bn: str = "restore",
) -> List[Dict[str, Any]]:
    """Zero-cost proxy scores of ONNX files, as ``nape proxies`` computes them: one dict per
    file with ``proxies`` (name to value) and ``errors`` (name to why a proxy is undefined on
    it). ``images``: an IDX file, a CIFAR-10 batch, a folder of images, or "gaussian"
    (default: Fashion-MNIST from the data folder). ``input_shape`` and ``dims`` bind the
    networks' inputs as in ``inspect``. ``folded_bn``: "restore" (default) puts back the
    BatchNorms an eval-mode export folded into its convolutions where the exporter's names say
    so, "guess" also where they say nothing, "keep" scores the file's graph as it is
    (``nape proxies --folded-bn``)."""
    if not isinstance(names, str):
        names = ",".join(names)
    files = _files(paths)
    imgs = os.fspath(images) if images is not None else None
    dat = os.fspath(data) if data is not None else None

    def call(part: List[str]) -> str:
        shape = list(input_shape) if input_shape is not None else None
        return _nape.proxy_scores(part, names, imgs, seed, batch, dat, shape, _dims(dims),
                                  folded_bn)

    return _finish(_chunked(call, files, "nape proxies", progress), errors)


Labels = Union[PathLike, Tuple[Sequence[Any], Sequence[float]]]


def finetune(
    labels: Labels,
    *,
    save_as: str,
    target: Optional[str] = None,
    model: str = "default",
    models: Optional[PathLike] = None,
    epochs: int = 60,
    lr: float = 3e-4,
    folds: int = 5,
    heads_only: bool = False,
    lower_is_better: bool = False,
    cache: Optional[PathLike] = None,
    runs: Optional[PathLike] = None,
    device: str = "cpu",
    verbose: bool = False,
    input_shape: Optional[Sequence[int]] = None,
    dims: Optional[Mapping[str, int]] = None,
) -> Dict[str, Any]:
    """Adapts ``model`` to your labelled networks and saves it as ``save_as`` (under
    ``models``, default the models folder): ``nape finetune --labels ... --json``.

    ``labels`` is a labels file (a CSV with a ``file`` column, or ``nape export``'s
    manifest.jsonl) or ``(paths, values)``. Returns the report: networks used, what
    cross-validation chose, skipped files, and ``model_dir``, which ``predict(model=...)``
    takes. ``input_shape`` and ``dims`` bind the networks' inputs as in ``inspect``."""
    with tempfile.TemporaryDirectory(prefix="nape-labels-") as tmp:
        if isinstance(labels, tuple):
            labels = _labels_csv(labels, Path(tmp) / f"{save_as}.csv", target or "y")
            target = target or "y"
        report = json.loads(
            _nape.finetune(
                os.fspath(labels),
                save_as,
                _nape.DEFAULT_MODEL if model == "default" else os.fspath(model),
                target,
                os.fspath(models) if models is not None else None,
                epochs,
                lr,
                folds,
                heads_only,
                lower_is_better,
                os.fspath(cache) if cache is not None else None,
                os.fspath(runs) if runs is not None else None,
                None,
                device,
                not verbose,
                list(input_shape) if input_shape is not None else None,
                _dims(dims),
            )
        )
    with _LOCK:  # a model saved under a name already loaded is that name's model from now on
        for key in [k for k in _PREDICTORS if k[0] == save_as]:
            del _PREDICTORS[key]
    return report


def _labels_csv(labels: Tuple[Sequence[Any], Sequence[float]], out: Path, column: str) -> Path:
    paths, values = labels
    paths, values = list(paths), list(values)
    if len(paths) != len(values):
        raise UsageError(f"{len(paths)} networks but {len(values)} labels")
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", column])
        for p, v in zip(paths, values):
            w.writerow([os.path.abspath(os.fspath(p)), repr(float(v))])
    return out
