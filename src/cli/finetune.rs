//! `nape finetune`: few-shot adaptation of a model to a benchmark family: for each seed, draw
//! `--samples` labelled records, fine-tune from the pretrained weights, and report Spearman
//! and Kendall tau before (zero-shot) and after on the rest.

use super::model_args::ModelArgs;
use crate::error::exit;
use crate::train::{data, flows, model};

/// Arguments of `nape finetune`.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// Model name (folder under models/) or path.
    #[arg(long, default_value = crate::predict::DEFAULT_MODEL)]
    pub model: String,
    /// Family to adapt to.
    #[arg(long)]
    pub family: String,
    /// Target (default: the family's main one).
    #[arg(long)]
    pub target: Option<String>,
    /// Labelled records to fine-tune on.
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// Seeds (each its own sample of records).
    #[arg(long, default_value_t = 5)]
    pub seeds: usize,
    /// Epochs over the samples.
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Evaluate on at most this many of the other records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Align the family's features onto the model's training statistics first.
    #[arg(long)]
    pub align_family: bool,
    /// Save the model fine-tuned with the first seed under this name.
    #[arg(long)]
    pub save_as: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Shared locations and device.
    #[command(flatten)]
    pub common: ModelArgs,
}

/// Runs `nape finetune`.
pub fn run(a: &FinetuneArgs, quiet: bool) -> anyhow::Result<i32> {
    let target = match &a.target {
        Some(t) => t.clone(),
        None => data::default_target(&a.family)?.to_string(),
    };
    if a.samples < 2 {
        return Err(crate::Error::Usage("--samples must be at least 2".into()).into());
    }
    let cfg = flows::FinetuneConfig {
        samples: a.samples,
        seeds: a.seeds,
        epochs: a.epochs,
        lr: a.lr,
        limit: a.limit,
        align_family: a.align_family,
    };
    let device = model::device(&a.common.device)?;
    let report = flows::finetune(
        &a.common.model_dir(&a.model),
        &a.family,
        &target,
        &cfg,
        &a.common.paths(),
        device,
        a.save_as.as_deref(),
        quiet,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &report.summary;
        println!(
            "{} {} with {} samples x {} seeds (run folder {}):",
            report.family,
            report.target,
            a.samples,
            a.seeds,
            report.run_dir.display()
        );
        for phase in ["before", "after", "params", "params_eff", "ridge"] {
            println!(
                "  {phase:<10} spearman {:.4} +- {:.4}   kendall tau {:.4} +- {:.4}",
                s[&format!("{phase}_spearman_mean")],
                s[&format!("{phase}_spearman_std")],
                s[&format!("{phase}_kendalltau_mean")],
                s[&format!("{phase}_kendalltau_std")]
            );
        }
    }
    Ok(exit::OK)
}
