//! The library's one error type. Every message names the file, and the node and op where there
//! is one; [`Error::exit_code`] maps each kind to the documented exit codes.

use std::path::PathBuf;

/// Everything that can go wrong in nape's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A data file the command needs is missing.
    #[error("{what} not found: looked for {path}{hint}")]
    MissingData {
        /// What it is ("NAS-Bench-101 labelled set").
        what: String,
        /// Where it was expected.
        path: PathBuf,
        /// How to get it (starts with "; " when present).
        hint: String,
    },
    /// A data file is there but malformed.
    #[error("{path}:{line}: {msg}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The file is not a readable ONNX model.
    #[error("{path}: not a valid ONNX model: {msg}")]
    InvalidOnnx {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A node of the model is invalid or cannot be handled.
    #[error("{path}: node {index} '{node}' ({op}): {msg}")]
    Node {
        /// The file.
        path: String,
        /// Position of the node in the file's node list.
        index: usize,
        /// Node name (or its first output's name when unnamed).
        node: String,
        /// ONNX op type.
        op: String,
        /// What is wrong.
        msg: String,
    },
    /// An op outside nape's vocabulary, under `--strict`.
    #[error("{path}: node {index} '{node}': unsupported op {op} (not in nape's op vocabulary; rerun without --strict to keep it as Unknown)")]
    Unsupported {
        /// The file.
        path: String,
        /// Node position.
        index: usize,
        /// Node name.
        node: String,
        /// ONNX op type.
        op: String,
    },
    /// Shapes could not be inferred or are inconsistent.
    #[error("{path}: shape error: {msg}")]
    Shape {
        /// The file.
        path: String,
        /// What is wrong (names the node where known).
        msg: String,
    },
    /// A benchmark spec (cell) is invalid.
    #[error("invalid {family} architecture '{spec}': {msg}")]
    BadSpec {
        /// Search space.
        family: String,
        /// The spec as given.
        spec: String,
        /// What is wrong.
        msg: String,
    },
    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),
    /// A network that parsed but could not be run or scored (no weights where the file's were
    /// asked for, a proxy whose definition does not apply, a numerical failure).
    #[error("{path}: {msg}")]
    Run {
        /// The network's file or spec.
        path: String,
        /// What went wrong.
        msg: String,
    },
    /// A model (clustering, regression) has invalid parameters or cannot be fitted to the data.
    #[error("{what}: {msg}")]
    Fit {
        /// The model ("fuzzy c-means", "ridge baseline").
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// A predictor model is invalid, does not match the features, or failed to train.
    #[error("model: {0}")]
    Model(String),
}

/// Shorthand result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, as documented in the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// Wrong command-line usage.
    pub const USAGE: i32 = 2;
    /// Missing data or I/O error.
    pub const DATA: i32 = 3;
    /// Invalid or unsupported ONNX.
    pub const ONNX: i32 = 4;
    /// Some items of a batch failed, others succeeded.
    pub const PARTIAL: i32 = 5;
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } | Error::MissingData { .. } | Error::BadData { .. } => exit::DATA,
            Error::InvalidOnnx { .. }
            | Error::Node { .. }
            | Error::Unsupported { .. }
            | Error::Shape { .. } => exit::ONNX,
            Error::BadSpec { .. } | Error::Usage(_) => exit::USAGE,
            Error::Run { .. } | Error::Fit { .. } | Error::Model(_) => exit::FAILURE,
        }
    }

    /// The message without the network's file, for a report that names the network itself
    /// (a proxy's error, a row of `nape proxies`); other errors as they display.
    pub fn into_message(self) -> String {
        match self {
            Error::Run { msg, .. } => msg,
            other => other.to_string(),
        }
    }

    /// An I/O error on `path`; a missing file becomes [`Error::MissingData`]-like wording.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir =
        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    // tempfile creates 0600 files; outputs are ordinary files, readable like any other
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// An empty vector with room for `n` values, or, where the allocator refuses, a message that
/// says memory ran out ("can't allocate memory for ...", `what` naming the values), so a large
/// buffer fails the one file or network that needs it where Rust would abort the whole run on
/// a failed allocation (a run capped in address space, `proxies::memory::cap_address_space`).
pub fn try_vec<T>(n: usize, what: impl FnOnce() -> String) -> std::result::Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| format!("can't allocate memory for {} ({e})", what()))?;
    Ok(v)
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`; a panic inside it comes back as its message's first line instead of unwinding
/// further, and the panic hook stays silent while `f` runs (nape's own panics elsewhere still
/// report loudly). For code that panics on what it cannot handle: tract on malformed models,
/// tch's calls that unwrap libtorch's errors (among them an allocation refused under a run's
/// address-space cap, `proxies::memory::cap_address_space`).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_quiet_hook();
    let outer = QUIET.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|c| c.set(outer));
    r.map_err(|payload| panic_line(payload.as_ref()))
}

/// Once per process: the panic hook says nothing while [`catch_panic`] runs on this thread.
fn install_quiet_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
}

/// A panic's message, one line: libtorch's as `unwrap` quotes it (`Torch("...")`, its line
/// breaks escaped) without its C++ frames.
fn panic_line(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown cause".into());
    let msg = msg.split_once("Torch(\"").map_or(msg.clone(), |(_, m)| format!("libtorch: {m}"));
    let first = msg.lines().next().unwrap_or("").split("\\n").next().unwrap_or("");
    first.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::catch_panic;

    #[test]
    fn a_panic_comes_back_as_its_first_line_and_nesting_restores_the_quiet_flag() {
        assert_eq!(catch_panic(|| 3), Ok(3));
        let e = catch_panic(|| -> () { panic!("tract: bad rank\nmore") }).unwrap_err();
        assert_eq!(e, "tract: bad rank");
        let inner = catch_panic(|| catch_panic(|| -> () { panic!("inner") }));
        assert_eq!(inner, Ok(Err("inner".to_string())));
        assert!(!super::QUIET.with(|c| c.get()), "quiet only inside");
    }
}
