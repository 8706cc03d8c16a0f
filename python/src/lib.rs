//! `nape._nape`: the Rust core in-process for Python, a thin layer over the `nape` crate.
//!
//! Every function here calls what the CLI calls and answers with what the CLI's `--json`
//! prints (as JSON text, which `nape/__init__.py` turns into dicts), so the two fronts give the
//! same numbers. Each releases the GIL while Rust works. Errors become Python exceptions of
//! the class of nape's exit code (`NapeError` and its subclasses), carrying nape's message,
//! which names the file, node and op.

use nape::dataset::images::ImageSource;
use nape::onnx::ImportOptions;
use nape::proxies::schedule::{self, Plan};
use nape::proxies::{self, ProxyInput};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use std::convert::Infallible;
use std::path::PathBuf;

create_exception!(_nape, NapeError, PyException, "A nape failure (exit code 1).");
create_exception!(_nape, UsageError, NapeError, "A bad argument (exit code 2).");
create_exception!(_nape, DataError, NapeError, "Missing data or an I/O error (exit code 3).");
create_exception!(
    _nape,
    OnnxError,
    NapeError,
    "An invalid or unsupported ONNX file (exit code 4)."
);

/// The Python exception of a nape error: its class follows the exit code.
fn py_err(e: nape::Error) -> PyErr {
    let msg = e.to_string();
    match e.exit_code() {
        2 => UsageError::new_err(msg),
        3 => DataError::new_err(msg),
        4 => OnnxError::new_err(msg),
        _ => NapeError::new_err(msg),
    }
}

/// A JSON value as the text Python parses.
fn text(v: &serde_json::Value) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| NapeError::new_err(e.to_string()))
}

/// Import options binding the inputs as `--input-shape` and `--dim` do (`dims` as pairs).
fn import_options(
    input_shape: Option<Vec<usize>>,
    dims: Option<Vec<(String, usize)>>,
) -> ImportOptions {
    ImportOptions { input_shape, dims: dims.unwrap_or_default(), ..Default::default() }
}

/// `nape inspect --json`'s entry of one ONNX file.
#[pyfunction]
#[pyo3(signature = (path, input_shape=None, strict=false, dims=None))]
fn inspect_file(
    py: Python<'_>,
    path: PathBuf,
    input_shape: Option<Vec<usize>>,
    strict: bool,
    dims: Option<Vec<(String, usize)>>,
) -> PyResult<String> {
    let opts = ImportOptions { strict, shapes_only: true, ..import_options(input_shape, dims) };
    let cg = py.detach(|| nape::onnx::load(&path, &opts)).map_err(py_err)?;
    text(&nape::cli::inspect::summary_json(&path.display().to_string(), &cg))
}

/// The same of ONNX bytes; `name` stands for the file in the entry and in messages.
#[pyfunction]
#[pyo3(signature = (data, name, input_shape=None, strict=false, dims=None))]
fn inspect_bytes(
    py: Python<'_>,
    data: Vec<u8>,
    name: String,
    input_shape: Option<Vec<usize>>,
    strict: bool,
    dims: Option<Vec<(String, usize)>>,
) -> PyResult<String> {
    let opts = ImportOptions { strict, shapes_only: true, ..import_options(input_shape, dims) };
    let cg = py.detach(|| nape::onnx::load_bytes(&data, &name, &opts)).map_err(py_err)?;
    text(&nape::cli::inspect::summary_json(&name, &cg))
}

/// A loaded model, ready to predict: `nape predict` without the process around it.
#[pyclass(module = "nape._nape")]
struct Predictor {
    /// Locked while it predicts: libtorch's modules are not meant to be shared across threads.
    inner: std::sync::Mutex<nape::predict::Predictor>,
    dir: PathBuf,
}

impl Predictor {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, nape::predict::Predictor>> {
        self.inner.lock().map_err(|_| NapeError::new_err("the predictor failed in another thread"))
    }
}

#[pymethods]
impl Predictor {
    /// Loads model `model` (a name under `models`, else the bundled models, or a path).
    #[new]
    #[pyo3(signature = (model, models=None, device="cpu", input_shape=None, data=None, dims=None))]
    fn new(
        py: Python<'_>,
        model: &str,
        models: Option<PathBuf>,
        device: &str,
        input_shape: Option<Vec<usize>>,
        data: Option<PathBuf>,
        dims: Option<Vec<(String, usize)>>,
    ) -> PyResult<Predictor> {
        let dir = nape::predict::resolve_model(model, models.as_deref());
        let device = nape::train::model::device(device).map_err(py_err)?;
        let opts = import_options(input_shape, dims);
        let data = nape::dataset::data_dir(data.as_deref());
        let inner = py
            .detach(|| nape::predict::Predictor::load(&dir, device, opts, &data))
            .map_err(py_err)?;
        Ok(Predictor { inner: std::sync::Mutex::new(inner), dir })
    }

    /// `predict --json`'s header: model, members, what it predicts, its family, notes.
    fn header(&self) -> PyResult<String> {
        let mut h = self.lock()?.header_json();
        h["model_dir"] = serde_json::json!(self.dir.display().to_string());
        text(&h)
    }

    /// One entry per file, in order: the prediction, or the error and its exit code.
    /// `progress(1)` is called as each file is read (with the GIL taken for the call).
    #[pyo3(signature = (paths, progress=None))]
    fn predict_files(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let tick = || {
            if let Some(cb) = &progress {
                // a failing progress callback must not fail the prediction
                Python::attach(|py| cb.call1(py, (1,)).map(|_| ()).unwrap_or(()));
            }
        };
        let results =
            py.detach(|| Ok::<_, PyErr>(self.lock()?.predict_files_with(&paths, &tick)))?;
        let items: Vec<serde_json::Value> = paths
            .iter()
            .zip(&results)
            .map(|(f, r)| nape::predict::item_json(&f.display().to_string(), r))
            .collect();
        text(&serde_json::Value::Array(items))
    }

    /// The entry of one network given as ONNX bytes (`name` stands for its file).
    fn predict_bytes(&self, py: Python<'_>, data: Vec<u8>, name: String) -> PyResult<String> {
        let r = py.detach(|| Ok::<_, PyErr>(self.lock()?.predict_bytes(&data, &name)))?;
        text(&nape::predict::item_json(&name, &r))
    }
}

/// Zero-cost proxy scores of ONNX files: one entry per file with `proxies` (name to value) and
/// `errors` (name to why), as `nape proxies` computes them (networks in parallel, one
/// libtorch thread each; with fewer files than cores, each file's proxies on the spare ones).
#[pyfunction]
#[pyo3(signature = (paths, names="all", images=None, seed=0, batch=None, data=None,
    input_shape=None, dims=None, folded_bn="restore"))]
#[allow(clippy::too_many_arguments)]
fn proxy_scores(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    names: &str,
    images: Option<String>,
    seed: u64,
    batch: Option<usize>,
    data: Option<PathBuf>,
    input_shape: Option<Vec<usize>>,
    dims: Option<Vec<(String, usize)>>,
    folded_bn: &str,
) -> PyResult<String> {
    let opts = import_options(input_shape, dims);
    let ps = proxies::select(names).map_err(py_err)?;
    let folded_bn: proxies::FoldedBn =
        folded_bn.parse().map_err(pyo3::exceptions::PyValueError::new_err)?;
    let ps: Vec<&dyn proxies::Proxy> = ps.iter().map(|p| &**p).collect();
    let lanes = (rayon::current_num_threads() / paths.len().max(1)).max(1);
    let data = nape::dataset::data_dir(data.as_deref());
    let images = ImageSource::from_arg(images.as_deref(), &data).map_err(py_err)?;
    // as `nape proxies`: networks run together while their estimated peaks fit in memory, and
    // one that cannot fit the machine at all is refused (its row says why)
    let (budget, total) = (proxies::memory::machine_budget(), proxies::memory::machine_total());
    let file = |i: usize| paths[i].display().to_string();
    let prepare = |i: usize| {
        let cg = nape::onnx::load(&paths[i], &opts).map(|mut cg| {
            proxies::scored_network(&mut cg, folded_bn);
            cg
        });
        proxies::memory::prepare(cg, &ps, (lanes, batch), (budget, total), &file(i))
    };
    let score = |i: usize, cg: nape::Result<nape::graph::Cg>| -> serde_json::Value {
        let cg = match cg {
            Ok(cg) => cg,
            Err(e) => {
                return serde_json::json!({"file": file(i), "ok": false, "error": e.to_string(),
                    "exit_code": e.exit_code()})
            }
        };
        let input = ProxyInput::new(&cg, &images, seed, tch::Device::Cpu).with_batch(batch);
        let (mut scores, mut errors) = (serde_json::Map::new(), serde_json::Map::new());
        for (k, v) in proxies::score_lanes(&ps, input, lanes) {
            match v {
                Ok(v) => scores.insert(k, v.into()),
                Err(e) => errors.insert(k, e.into()),
            };
        }
        serde_json::json!({"file": file(i), "ok": true, "proxies": scores, "errors": errors})
    };
    let mut rows = vec![serde_json::Value::Null; paths.len()];
    let plan = Plan { workers: rayon::current_num_threads(), budget, window: schedule::WINDOW };
    py.detach(|| {
        tch::set_num_threads(1);
        schedule::run(paths.len(), plan, prepare, score, |i, row| -> Result<(), Infallible> {
            rows[i] = row;
            Ok(())
        })
    })
    .unwrap_or_else(|never| match never {});
    text(&serde_json::Value::Array(rows))
}

/// `nape finetune --labels LABELS --save-as SAVE_AS --json`: adapts `model` to every row of
/// the labels file and saves it under `models` (default: the models folder).
#[pyfunction]
#[pyo3(signature = (labels, save_as, model, target=None, models=None, epochs=60, lr=3e-4,
    folds=5, heads_only=false, lower_is_better=false, cache=None, runs=None, data=None,
    device="cpu", quiet=true, input_shape=None, dims=None))]
#[allow(clippy::too_many_arguments)]
fn finetune(
    py: Python<'_>,
    labels: PathBuf,
    save_as: &str,
    model: &str,
    target: Option<String>,
    models: Option<PathBuf>,
    epochs: usize,
    lr: f64,
    folds: usize,
    heads_only: bool,
    lower_is_better: bool,
    cache: Option<PathBuf>,
    runs: Option<PathBuf>,
    data: Option<PathBuf>,
    device: &str,
    quiet: bool,
    input_shape: Option<Vec<usize>>,
    dims: Option<Vec<(String, usize)>>,
) -> PyResult<String> {
    use nape::train::adapt::{AdaptConfig, Base};
    use nape::train::flows;
    let adapt =
        AdaptConfig { epochs, lr, folds, heads_only, base: Base::Flops, lower_is_better, seed: 0 };
    let dir = nape::predict::resolve_model(model, models.as_deref());
    let paths = flows::Paths {
        data: nape::dataset::data_dir(data.as_deref()),
        cache: cache.unwrap_or_else(|| ".nape-cache".into()),
        models: models.unwrap_or_else(nape::predict::models_dir),
        runs: runs.unwrap_or_else(|| "runs".into()),
        import: import_options(input_shape, dims),
    };
    let device = nape::train::model::device(device).map_err(py_err)?;
    let source = flows::Source::Labels(labels);
    let report = py
        .detach(|| {
            flows::finetune_all(
                &dir,
                &source,
                target.as_deref(),
                &adapt,
                &paths,
                device,
                save_as,
                quiet,
            )
        })
        .map_err(py_err)?;
    text(&serde_json::to_value(&report).map_err(|e| NapeError::new_err(e.to_string()))?)
}

/// The module.
#[pymodule]
fn _nape(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("NapeError", py.get_type::<NapeError>())?;
    m.add("UsageError", py.get_type::<UsageError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("OnnxError", py.get_type::<OnnxError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_MODEL", nape::predict::DEFAULT_MODEL)?;
    m.add_function(wrap_pyfunction!(inspect_file, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(proxy_scores, m)?)?;
    m.add_function(wrap_pyfunction!(finetune, m)?)?;
    m.add_class::<Predictor>()?;
    Ok(())
}
