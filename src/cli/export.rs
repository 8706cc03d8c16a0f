//! `nape export`: benchmark architectures -> ONNX files + `manifest.jsonl`.
//!
//! Reads a benchmark's records from the data folder ([`crate::dataset`]), builds each network
//! with [`crate::spaces`] and writes `OUT/<id>.onnx` (atomically, in parallel) plus
//! `OUT/manifest.jsonl`, one [`Record`] per file: `id`, `family`, `spec`, `file` (relative to
//! `OUT`), `targets` (every label) and `proxies` (published scores). The options that shape
//! the files (space, dataset or task, weights, seed) are kept in `OUT/export.json`; a rerun
//! with the same options skips the files already written (resumable), and one with other
//! options is refused rather than mixing networks.

use crate::dataset::{data_dir, load_space, write_manifest, Dataset, Record};
use crate::error::{exit, write_atomic, Error};
use crate::graph::fnv1a;
use crate::onnx::write::Weights;
use crate::spaces::{nb201, tnb_micro, BuildOptions, Space};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Arguments of `nape export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Search space: nb101, nb201 or tnb-micro.
    pub space: String,
    /// Output folder: ONNX files, manifest.jsonl and export.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Benchmark data folder (default: $NAPE_DATA, then ../shared/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Export only the first N architectures (in the benchmark file's order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write weights as initializers (PyTorch's default init, seeded by --seed and the id)
    /// instead of data-less graph inputs (files of a few kilobytes).
    #[arg(long)]
    pub with_weights: bool,
    /// NAS-Bench-201 dataset, setting input size and classes: cifar10, cifar100, imagenet16.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
    /// TransNAS-Bench-101 classification task: class_scene or class_object.
    #[arg(long, default_value = "class_scene")]
    pub task: String,
    /// Only these ids (comma-separated: NB-101 hashes, NB-201 indices, TNB-101 cell codes).
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Only architectures that carry this label. Default: the family's main label, if it has
    /// one (NB-101: val_acc_ep108, carried by 30,001 of the 30,267 cells).
    #[arg(long)]
    pub require: Option<String>,
    /// Every architecture of the benchmark file, also those without the main label.
    #[arg(long, conflicts_with = "require")]
    pub all: bool,
    /// Seed of the weights (with --with-weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The options a folder was exported with (`export.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ExportKey {
    space: String,
    /// NB-201 dataset or TNB-101 task; empty for NB-101.
    variant: String,
    with_weights: bool,
    seed: u64,
    nape_version: String,
}

/// Runs `nape export`.
pub fn run(a: &ExportArgs) -> anyhow::Result<i32> {
    let space: Space = a.space.parse()?;
    let dataset: nb201::Dataset = a.dataset.parse()?;
    let task: tnb_micro::Task = a.task.parse()?;
    let dir = data_dir(a.data.as_deref());
    let mut ds = load_space(space, &dir)?;
    report_issues(&ds);
    select_records(a, space, &mut ds)?;
    let key = ExportKey {
        space: space.name().into(),
        variant: match space {
            Space::Nb101 => String::new(),
            Space::Nb201 => dataset.name().into(),
            Space::TnbMicro => task.name().into(),
        },
        with_weights: a.with_weights,
        seed: a.seed,
        nape_version: env!("CARGO_PKG_VERSION").into(),
    };
    check_key(&a.out, &key)?;

    let bar = progress(ds.len() as u64);
    let results: Vec<(usize, Result<bool, Error>)> = ds
        .records
        .par_iter()
        .enumerate()
        .map(|(i, r)| {
            let res = export_one(r, space, dataset, task, a, &a.out);
            bar.inc(1);
            (i, res)
        })
        .collect();
    bar.finish_and_clear();
    report(a, space, &key, &ds, results)
}

/// Keeps the records to export: those with the required label (unless `--all`), the `--ids`
/// asked for, the first `--limit`.
fn select_records(a: &ExportArgs, space: Space, ds: &mut Dataset) -> anyhow::Result<()> {
    let require = match (&a.require, a.all) {
        (Some(t), _) => Some(t.as_str()),
        (None, false) => main_label(space),
        (None, true) => None,
    };
    if let Some(t) = require {
        let before = ds.len();
        *ds = std::mem::take(ds).require(t);
        ds.issues.truncate(ds.issues.len() - (before - ds.len()));
        if ds.len() < before {
            tracing::info!(
                "{space}: {} architectures without '{t}' left out (--all keeps them)",
                before - ds.len()
            );
        }
    }
    if !a.ids.is_empty() {
        if let Some(id) = a.ids.iter().find(|id| ds.get(id).is_none()) {
            let hint = if require.is_some() {
                " (among those with the required label; --all lifts that)"
            } else {
                ""
            };
            return Err(Error::Usage(format!("no {space} architecture has id '{id}'{hint}")).into());
        }
        ds.records.retain(|r| a.ids.contains(&r.id));
    }
    if let Some(n) = a.limit {
        ds.records.truncate(n);
    }
    Ok(())
}

/// Writes the manifest of what was exported and prints the summary; the exit code.
fn report(
    a: &ExportArgs,
    space: Space,
    key: &ExportKey,
    ds: &Dataset,
    results: Vec<(usize, Result<bool, Error>)>,
) -> anyhow::Result<i32> {
    let Tally { records, written, skipped, failed } = tally(ds, results);
    let manifest = a.out.join("manifest.jsonl");
    write_manifest(&manifest, &records)?;
    for f in failed.iter().take(10) {
        tracing::error!("{f}");
    }
    let summary = serde_json::json!({
        "space": space.name(),
        "variant": key.variant,
        "out": a.out,
        "manifest": manifest,
        "exported": records.len(),
        "written": written,
        "already_there": skipped,
        "failed": failed.len(),
        "issues": ds.issues.len(),
        "nape_version": env!("CARGO_PKG_VERSION"),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: {} networks in {} ({} written, {} already there, {} failed); manifest {}",
            space,
            records.len(),
            a.out.display(),
            written,
            skipped,
            failed.len(),
            manifest.display()
        );
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else if records.is_empty() {
        exit::FAILURE
    } else {
        exit::PARTIAL
    })
}

/// The label every exported architecture of `space` carries unless `--all` is given.
fn main_label(space: Space) -> Option<&'static str> {
    match space {
        Space::Nb101 => Some("val_acc_ep108"),
        Space::Nb201 | Space::TnbMicro => None,
    }
}

/// What an export did: the records written or found (with their files), and the failures.
struct Tally {
    records: Vec<Record>,
    written: usize,
    skipped: usize,
    failed: Vec<String>,
}

fn tally(ds: &Dataset, results: Vec<(usize, Result<bool, Error>)>) -> Tally {
    let mut t =
        Tally { records: Vec::with_capacity(ds.len()), written: 0, skipped: 0, failed: vec![] };
    for (i, res) in results {
        let r = &ds.records[i];
        match res {
            Ok(w) => {
                if w {
                    t.written += 1;
                } else {
                    t.skipped += 1;
                }
                let mut rec = r.clone();
                rec.file = Some(PathBuf::from(file_name(&r.id)));
                t.records.push(rec);
            }
            Err(e) => t.failed.push(format!("{}: {e}", r.id)),
        }
    }
    t
}

fn report_issues(ds: &Dataset) {
    if ds.issues.is_empty() {
        return;
    }
    tracing::warn!(
        "{}: {} records skipped or labels left out; the first: {}",
        ds.family,
        ds.issues.len(),
        ds.issues.iter().take(3).map(|i| i.to_string()).collect::<Vec<_>>().join("; ")
    );
}

/// Refuses to mix files made with other options into `out`; records the options otherwise.
fn check_key(out: &Path, key: &ExportKey) -> crate::Result<()> {
    let path = out.join("export.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let old: ExportKey = serde_json::from_slice(&bytes).map_err(|e| Error::BadData {
                path: path.clone(),
                line: 0,
                msg: format!("not an export record ({e}); remove it or use another --out"),
            })?;
            if &old != key {
                return Err(Error::Usage(format!(
                    "{} holds an export with other options ({}); use another --out to export {}",
                    out.display(),
                    serde_json::to_string(&old).unwrap_or_default(),
                    serde_json::to_string(key).unwrap_or_default()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = serde_json::to_vec_pretty(key).map_err(|e| Error::BadData {
                path: path.clone(),
                line: 0,
                msg: e.to_string(),
            })?;
            write_atomic(&path, &bytes)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn file_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect();
    format!("{safe}.onnx")
}

/// Writes one network; `Ok(false)` when its file was already there.
fn export_one(
    r: &Record,
    space: Space,
    dataset: nb201::Dataset,
    task: tnb_micro::Task,
    a: &ExportArgs,
    out: &Path,
) -> Result<bool, Error> {
    let path = out.join(file_name(&r.id));
    if std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false) {
        return Ok(false);
    }
    let weights =
        if a.with_weights { Weights::Data(a.seed ^ fnv1a(&r.id)) } else { Weights::Inputs };
    let spec = space.parse_spec(&r.spec)?;
    let built = spec.build(&BuildOptions { weights, nb201_dataset: dataset, tnb_task: task })?;
    write_atomic(&path, &built.to_bytes())?;
    Ok(true)
}

fn progress(n: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {pos}/{len} networks [{elapsed_precise}] {wide_bar} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("1_13_302"), "1_13_302.onnx");
        assert_eq!(file_name("a/b c"), "a_b_c.onnx");
    }

    #[test]
    fn per_id_seeds_differ() {
        assert_ne!(fnv1a("a"), fnv1a("b"));
    }
}
