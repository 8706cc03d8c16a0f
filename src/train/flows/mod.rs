//! The training workflows behind the CLI, each on a [`LabelledSet`]: the labelled networks of
//! a benchmark family nape knows (`--family`) or of a user's own labels file (`--labels`),
//! featurised through one cache. [`pretrain`] trains a model (a checkpoint and a run folder),
//! [`evaluate`] scores one on networks it has not seen, [`finetune`] runs the few-shot protocol
//! (before/after on the rest, over seeds) and [`finetune_all`] adapts a model to every row
//! and saves it. Every report carries the baselines of [`baselines`] on the same rows.

pub mod baselines;
mod evaluate;
pub mod finetune;
pub mod mix;
mod pretrain;

pub use evaluate::{
    align_samples, calibrate_domain, eval_records, evaluate, training_stats, EvalReport,
};
pub use finetune::{finetune, finetune_all, FinetuneAllReport, FinetuneConfig, FinetuneReport};
pub use pretrain::{pretrain, pretrain_set, split_labelled, PretrainReport};

use super::data::{self, Sample};
use super::model::Model;
use crate::dataset::labels::{read_labels, MIN_ROWS};
use crate::dataset::{Dataset, Record};
use crate::error::{write_atomic, Error, Result};
use crate::onnx::ImportOptions;
use crate::proxies::FeatureScorer;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where data, caches, models and run folders live, and how the files of a labels file are read.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Benchmark data (`NAPE_DATA`).
    pub data: PathBuf,
    /// Feature cache.
    pub cache: PathBuf,
    /// Model folders.
    pub models: PathBuf,
    /// Run folders.
    pub runs: PathBuf,
    /// How the data inputs of a labels file's networks are bound (`--input-shape`, `--dim`).
    pub import: ImportOptions,
}

/// A run folder `runs/<id>/`.
#[derive(Debug)]
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `runs/<kind>-<name>-<unix seconds>[-n]`.
    pub fn create(runs: &Path, kind: &str, name: &str) -> Result<RunDir> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("{kind}-{name}-{secs}");
        let mut path = runs.join(&base);
        let mut i = 1;
        while path.exists() {
            path = runs.join(format!("{base}-{i}"));
            i += 1;
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(RunDir { path })
    }

    /// Writes `file` as pretty JSON.
    pub fn json<T: Serialize>(&self, file: &str, v: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(v)
            .map_err(|e| Error::Model(format!("cannot serialise {file}: {e}")))?;
        write_atomic(&self.path.join(file), &bytes)
    }

    /// Writes `log.txt`.
    pub fn log(&self, lines: &[String]) -> Result<()> {
        write_atomic(&self.path.join("log.txt"), (lines.join("\n") + "\n").as_bytes())
    }

    /// Writes `predictions.csv` (id, truth, prediction, uncertainty, params, params_effective,
    /// flops, then one column per `extra` baseline's predictions).
    pub fn predictions(
        &self,
        records: &[&Record],
        truth: &[f64],
        pred: &[(f64, f64)],
        samples: &[&Sample],
        extra: &[(String, Vec<f64>)],
    ) -> Result<()> {
        let mut s = String::from("id,truth,prediction,uncertainty,params,params_effective,flops");
        for (name, _) in extra {
            s.push_str(&format!(",{}", csv_field(name)));
        }
        s.push('\n');
        for (i, (((r, t), p), x)) in records.iter().zip(truth).zip(pred).zip(samples).enumerate() {
            s.push_str(&format!(
                "{},{t},{},{},{},{},{}",
                csv_field(&r.id),
                p.0,
                p.1,
                x.params,
                x.params_effective,
                x.flops
            ));
            for (_, v) in extra {
                s.push_str(&format!(",{}", v.get(i).copied().unwrap_or(f64::NAN)));
            }
            s.push('\n');
        }
        write_atomic(&self.path.join("predictions.csv"), s.as_bytes())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Where labelled networks come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A benchmark family nape builds from its specs (`nb101`, `nb201`, `tnb-micro`).
    Family(String),
    /// A user's labels file: a CSV or JSONL of ONNX files and their targets.
    Labels(PathBuf),
}

/// Labelled networks, featurised: the input of every flow.
#[derive(Debug, Clone)]
pub struct LabelledSet {
    /// The family name (`nb201`, or `labels:<file stem>` for a labels file).
    pub family: String,
    /// The target.
    pub target: String,
    /// What the target is, in words (a model trained on it says so).
    pub predicts: String,
    /// The records, every one with the target.
    pub records: Dataset,
    /// Their features, in the same order.
    pub samples: Vec<Sample>,
    /// Files of a labels file that could not be read, with why: left out, reported.
    pub skipped: Vec<(String, String)>,
    /// The proxies the features read.
    pub proxies: Vec<String>,
    /// The part each network comes from, for a mix of several families ([`mix`]); `None`
    /// for one family or labels file.
    pub groups: Option<mix::Groups>,
}

impl LabelledSet {
    /// Reads and featurises `source` for `target` (default: the family's main target, or the
    /// labels file's only numeric column), with the scores of the proxies named `proxies`.
    pub fn load(
        source: &Source,
        target: Option<&str>,
        proxies: &[String],
        paths: &Paths,
    ) -> Result<LabelledSet> {
        let mut set = Self::load_lazy(source, target, proxies, paths)?;
        if set.samples.len() < set.records.len() {
            let all: Vec<usize> = (0..set.records.len()).collect();
            set.samples = set.samples_at(&all, paths)?;
        }
        Ok(set)
    }

    /// [`LabelledSet::load`], but a benchmark family's networks are only featurised when
    /// [`LabelledSet::samples_at`] asks for them (`samples` stays empty): what pretraining on
    /// a few thousand of NB-101's 30,001 cells needs. A labels file is featurised at once
    /// (which of its files parse decides its rows).
    pub fn load_lazy(
        source: &Source,
        target: Option<&str>,
        proxies: &[String],
        paths: &Paths,
    ) -> Result<LabelledSet> {
        match source {
            Source::Family(family) => {
                let target = match target {
                    Some(t) => t.to_string(),
                    None => data::default_target(family)?.to_string(),
                };
                let records = data::load_family(&paths.data, family)?.require(&target);
                if records.is_empty() {
                    return Err(Error::Model(format!("no {family} record has target {target}")));
                }
                Ok(LabelledSet {
                    family: family.clone(),
                    predicts: data::describe_target(family, &target),
                    target,
                    records,
                    samples: Vec::new(),
                    skipped: Vec::new(),
                    proxies: proxies.to_vec(),
                    groups: None,
                })
            }
            Source::Labels(path) => {
                let scorer = FeatureScorer::new(proxies, &paths.data)?;
                Self::from_labels(path, target, proxies, paths, &|cg| scorer.score(cg))
            }
        }
    }

    /// The features of the networks at `idx`: from `samples` when featurised, else built
    /// (through the cache) for those records only.
    pub fn samples_at(&self, idx: &[usize], paths: &Paths) -> Result<Vec<Sample>> {
        if self.samples.len() == self.records.len() {
            return Ok(idx.iter().map(|&i| self.samples[i].clone()).collect());
        }
        let recs: Vec<Record> = idx.iter().map(|&i| self.records.records[i].clone()).collect();
        let scorer = FeatureScorer::new(&self.proxies, &paths.data)?;
        let score = |cg: &crate::graph::Cg| scorer.score(cg);
        data::featurise(&recs, &self.family, &self.target, &paths.cache, &self.proxies, &score)
    }

    fn from_labels(
        path: &Path,
        target: Option<&str>,
        proxies: &[String],
        paths: &Paths,
        score: data::Scorer,
    ) -> Result<LabelledSet> {
        let labels = read_labels(path, target)?;
        let files: Vec<&Path> = labels.records.iter().filter_map(|r| r.file.as_deref()).collect();
        let featurised =
            data::featurise_files(&files, &paths.cache, &paths.import, proxies, score)?;
        let mut set = LabelledSet {
            family: labels.family(),
            predicts: format!("{} as labelled in {}", labels.target, path.display()),
            target: labels.target.clone(),
            records: Dataset { family: labels.family(), records: Vec::new(), issues: Vec::new() },
            samples: Vec::new(),
            skipped: Vec::new(),
            proxies: proxies.to_vec(),
            groups: None,
        };
        for (r, s) in labels.records.into_iter().zip(featurised) {
            match s {
                Ok(s) => {
                    set.records.records.push(r);
                    set.samples.push(s);
                }
                Err(e) => set.skipped.push((r.id, e.to_string())),
            }
        }
        if set.samples.len() < MIN_ROWS {
            return Err(Error::BadData {
                path: path.to_path_buf(),
                line: 0,
                msg: format!(
                    "{} of its networks could be read ({} could not: {}); at least {MIN_ROWS} \
                     are needed",
                    set.samples.len(),
                    set.skipped.len(),
                    set.skipped.iter().map(|s| s.1.as_str()).collect::<Vec<_>>().join("; ")
                ),
            });
        }
        Ok(set)
    }

    /// Number of networks.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The target of every network.
    pub fn truth(&self) -> Vec<f64> {
        targets(&self.records.records, &self.target)
    }
}

/// Each record's `target` (NaN where missing).
fn targets(records: &[Record], target: &str) -> Vec<f64> {
    records.iter().map(|r| r.target(target).unwrap_or(f64::NAN)).collect()
}

/// The proxies a model reads as features.
fn proxies_of(model: &Model) -> &[String] {
    &model.meta.config.proxies
}
