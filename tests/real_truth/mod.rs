//! Checking nape against the truth written beside real exports (scripts/export_corpus.py):
//! one `truth.jsonl` per family folder, one line per model with torch's parameter count and
//! flop-counter MACs. Shared by the committed sample (tests/corpus_sample.rs) and the full
//! corpus check (tests/corpus_real.rs, `make corpus-check`).

use nape::onnx::{load, ImportOptions};
use rayon::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Relative tolerance on parameters and MACs.
pub const TOLERANCE: f64 = 0.01;

/// One model of a family, as `truth.jsonl` describes it.
#[derive(Debug, Clone)]
pub struct Truth {
    pub file: String,
    pub params: u64,
    /// Frozen parameters (`requires_grad=False`): the exporter folds them into a product
    /// (pytorchcv's X-DenseNet masks) or keeps them as weights of the file, so nape's count
    /// may hold them or not.
    pub frozen: u64,
    /// The BatchNorms' affine parameters, which an eval-mode export folds into the
    /// convolutions (the file then holds up to this many fewer values than torch counts).
    pub bn_params: u64,
    /// What the file holds by the Python rule of `scripts/corpus_truth.py::file_params`.
    pub file_params: Option<u64>,
    pub macs: Option<u64>,
    pub embedded: Option<String>,
}

/// nape's counts of one file: parameters and the part of them it cannot decide (copies of a
/// weight the file holds no values for), MACs and the part of them that is an upper bound
/// (shapes after a data-dependent count, `OpNode::bounded`), Unknown op types.
#[derive(Debug, Clone)]
pub struct Counted {
    pub params: u64,
    pub undecided_params: u64,
    pub macs: u64,
    pub bounded_macs: u64,
    pub unknown: Vec<String>,
}

/// What nape made of one file (one form: stripped or embedded).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub form: &'static str,
    pub file: String,
    pub parsed: Result<Counted, String>,
    pub truth: Truth,
}

impl Outcome {
    pub fn unknown(&self) -> bool {
        matches!(&self.parsed, Ok(c) if !c.unknown.is_empty())
    }
    /// nape's count agrees with torch's: within 1% of its trainable parameters, with or
    /// without the frozen ones; or below it by no more than the BatchNorms the export folded;
    /// or, where part of nape's count is undecided, torch's count lies within its range.
    pub fn params_ok(&self) -> bool {
        let Ok(c) = &self.parsed else { return false };
        let t = &self.truth;
        [t.params, t.params + t.frozen].into_iter().any(|want| {
            within(c.params, want)
                || in_range(c.params, want.saturating_sub(t.bn_params), t.bn_params)
                || in_range(want, c.params - c.undecided_params, c.undecided_params)
        })
    }
    /// Where nape's count is above torch's, it is exactly what the file holds by the Python
    /// rule, and the file holds more than the module: the exporter wrote copies of one weight
    /// (PolyNet's convolutions shared between calls, each call's BatchNorm folded into its own
    /// copy). A weight nape counted twice would be above the file's count too, so still fails.
    pub fn params_as_file(&self) -> bool {
        let Ok(c) = &self.parsed else { return false };
        let t = &self.truth;
        !self.params_ok() && t.file_params == Some(c.params) && c.params > t.params + t.frozen
    }
    /// `None` where the truth has no MAC count. Where part of nape's MACs is an upper bound,
    /// torch's count on its one input must lie between the exact part and the bound.
    pub fn macs_ok(&self) -> Option<bool> {
        let want = self.truth.macs?;
        Some(matches!(&self.parsed, Ok(c) if within(c.macs, want)
            || in_range(want, c.macs - c.bounded_macs, c.bounded_macs)))
    }
    /// Why this file fails the check, if it does.
    pub fn problem(&self) -> Option<String> {
        match &self.parsed {
            Err(e) => Some(format!("not parsed: {e}")),
            Ok(c) => {
                let mut why = Vec::new();
                if !c.unknown.is_empty() {
                    why.push(format!("unknown ops {:?}", c.unknown));
                }
                if !self.params_ok() && !self.params_as_file() {
                    let (p, u, want) = (c.params, c.undecided_params, self.truth.params);
                    why.push(format!("params {p} ({u} of them undecided) vs torch {want}"));
                }
                if self.macs_ok() == Some(false) {
                    let (m, b) = (c.macs, c.bounded_macs);
                    let want = self.truth.macs.unwrap_or(0);
                    why.push(format!("macs {m} ({b} of them an upper bound) vs torch {want}"));
                }
                (!why.is_empty()).then(|| why.join("; "))
            }
        }
    }
}

/// Whether `want` lies within [`low`, `low + width`] (and the tolerance), for a nonzero width.
pub fn in_range(want: u64, low: u64, width: u64) -> bool {
    let (want, low, high) = (want as f64, low as f64, (low + width) as f64);
    width > 0 && want >= low * (1.0 - TOLERANCE) && want <= high * (1.0 + TOLERANCE)
}

pub fn within(got: u64, want: u64) -> bool {
    (got as f64 - want as f64).abs() <= TOLERANCE * (want as f64).max(1.0)
}

/// Reads `dir/truth.jsonl`.
pub fn read_truth(dir: &Path) -> Vec<Truth> {
    let p = dir.join("truth.jsonl");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("truth line is JSON");
            Truth {
                file: v["file"].as_str().expect("file").to_string(),
                params: v["params"].as_u64().expect("params"),
                frozen: v["frozen_params"].as_u64().unwrap_or(0),
                bn_params: v["bn_params"].as_u64().unwrap_or(0),
                file_params: v["file_params"].as_u64(),
                macs: v["macs"].as_u64(),
                embedded: v["embedded"].as_str().map(str::to_string),
            }
        })
        .collect()
}

/// Reads a file as `inspect` and `predict` do: the weights' shapes, not their bytes
/// (tests/shapes_only.rs holds that both readings give one graph).
fn parse(path: &Path) -> Result<Counted, String> {
    let opts = ImportOptions { shapes_only: true, ..Default::default() };
    let cg = load(path, &opts).map_err(|e| e.to_string())?;
    // the graph the features read is a valid graph too
    cg.canonical().validate().map_err(|e| format!("canonical graph: {e}"))?;
    let s = cg.summary();
    let unknown = s.unknown.keys().cloned().collect();
    Ok(Counted {
        params: s.params,
        undecided_params: s.undecided_params,
        macs: s.macs,
        bounded_macs: s.bounded_macs,
        unknown,
    })
}

/// Parses every file of a family folder, stripped and (where present) embedded, on `threads`.
/// `NAPE_CORPUS_FORMS=stripped` (or `embedded`) checks one form only.
pub fn check_family(dir: &Path, threads: usize) -> Vec<Outcome> {
    let forms = std::env::var("NAPE_CORPUS_FORMS").unwrap_or_else(|_| "stripped,embedded".into());
    let mut jobs: Vec<(&'static str, PathBuf, Truth)> = Vec::new();
    for t in read_truth(dir) {
        if forms.contains("stripped") {
            jobs.push(("stripped", dir.join(&t.file), t.clone()));
        }
        let embedded = t.embedded.as_ref().map(|e| dir.join(e)).filter(|p| p.exists());
        if let Some(e) = embedded.filter(|_| forms.contains("embedded")) {
            jobs.push(("embedded", e, t));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    pool.install(|| {
        jobs.par_iter()
            .map(|(form, path, truth)| Outcome {
                form,
                file: path.strip_prefix(dir).unwrap_or(path).display().to_string(),
                parsed: parse(path),
                truth: truth.clone(),
            })
            .collect()
    })
}

/// One table row per family and form: files, parsed, with Unknown ops, params that agree with
/// torch's (and, after a `+`, those that are the file's own count above torch's), MACs within 1%.
pub fn table(rows: &[(String, Vec<Outcome>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| family | form | files | parsed | with Unknown ops | params agree (+ the file's copies) | MACs within 1% (of defined) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for (family, outcomes) in rows {
        for form in ["stripped", "embedded"] {
            let o: Vec<&Outcome> = outcomes.iter().filter(|o| o.form == form).collect();
            if o.is_empty() {
                continue;
            }
            let parsed = o.iter().filter(|o| o.parsed.is_ok()).count();
            let unknown = o.iter().filter(|o| o.unknown()).count();
            let params = o.iter().filter(|o| o.params_ok()).count();
            let copies = o.iter().filter(|o| o.params_as_file()).count();
            let params =
                if copies > 0 { format!("{params} + {copies}") } else { params.to_string() };
            let defined = o.iter().filter(|o| o.macs_ok().is_some()).count();
            let macs = o.iter().filter(|o| o.macs_ok() == Some(true)).count();
            let n = o.len();
            let _ = writeln!(
                out,
                "| {family} | {form} | {n} | {parsed} | {unknown} | {params} | {macs} / {defined} |"
            );
        }
    }
    out
}
