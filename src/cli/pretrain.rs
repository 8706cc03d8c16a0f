//! `nape pretrain`: contrastive + supervised training on a benchmark family -> a model folder
//! under models/ and a run folder under runs/.

use super::model_args::ModelArgs;
use crate::error::exit;
use crate::train::{flows, model, TrainConfig};
use std::path::PathBuf;

/// Arguments of `nape pretrain`.
#[derive(Debug, clap::Args)]
pub struct PretrainArgs {
    /// Labelled family to train on.
    #[arg(long, default_value = "nb101")]
    pub family: String,
    /// Training configuration (JSON; missing fields take their defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Model name (folder under models/).
    #[arg(long, default_value = "nape-nb101")]
    pub name: String,
    /// Seed (overrides the config's).
    #[arg(long)]
    pub seed: Option<u64>,
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
    if cfg.family != a.family {
        cfg.family = a.family.clone();
        cfg.target = crate::train::data::default_target(&a.family)?.to_string();
        if a.family != "nb101" {
            cfg.pretrain.unlabelled = 0;
        }
    }
    let device = model::device(&a.common.device)?;
    let report = flows::pretrain(cfg, &a.name, &a.common.paths(), device, quiet)?;
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
    Ok(exit::OK)
}
