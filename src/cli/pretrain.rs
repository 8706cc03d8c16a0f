//! `nape pretrain`: contrastive + supervised training on a benchmark family -> a model folder
//! under models/ and a run folder under runs/.

use super::model_args::{report_skipped, ModelArgs, SourceArgs};
use crate::train::{flows, model, TrainConfig};
use std::path::PathBuf;

/// Arguments of `nape pretrain`.
#[derive(Debug, clap::Args)]
pub struct PretrainArgs {
    /// What to train on (default: --family nb101).
    #[command(flatten)]
    pub source: SourceArgs,
    /// Training configuration (JSON; missing fields take their defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Train on several families at once: one part per flag, `FAMILY[:TARGET]` or
    /// `LABELS_FILE[:TARGET]` (replaces the config's `mix.parts`; see docs/universal.md).
    #[arg(long, value_name = "PART", conflicts_with_all = ["family", "labels"])]
    pub mix: Vec<String>,
    /// Model name (folder under models/).
    #[arg(long, default_value = crate::predict::NB101_MODEL)]
    pub name: String,
    /// Seed (overrides the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Members of the deep ensemble (overrides the config's).
    #[arg(long)]
    pub members: Option<usize>,
    /// Print the metrics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Shared locations and device.
    #[command(flatten)]
    pub common: ModelArgs,
}

/// Runs `nape pretrain`.
pub fn run(a: &PretrainArgs, quiet: bool) -> anyhow::Result<i32> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::read(p)?,
        None => TrainConfig::default(),
    };
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(m) = a.members {
        cfg.members = m;
    }
    if !a.mix.is_empty() {
        cfg.mix.parts = a.mix.clone();
    }
    let paths = a.common.paths();
    let device = model::device(&a.common.device)?;
    let set = if cfg.mix.parts.is_empty() {
        let source = a.source.source(Some(&cfg.family.clone()))?;
        let target = match (&source, &a.source.target) {
            (_, Some(t)) => Some(t.clone()),
            (flows::Source::Family(f), None) if *f == cfg.family => Some(cfg.target.clone()),
            _ => None,
        };
        flows::LabelledSet::load_lazy(&source, target.as_deref(), &cfg.proxies, &paths)?
    } else {
        cfg.check()?;
        flows::mix::load_mix(&cfg, &paths)?
    };
    let report = flows::pretrain_set(cfg, &set, &a.name, &paths, device, quiet)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("model:      {}", report.model_dir.display());
        println!("run folder: {}", report.run_dir.display());
        for (who, m) in &report.metrics {
            let line: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            println!("{who:<8} {}", line.join(" "));
        }
    }
    Ok(report_skipped(&set.skipped))
}
