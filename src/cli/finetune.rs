//! `nape finetune`: few-shot adaptation of a model to a benchmark family or to your own
//! labelled ONNX files (`--labels`). With `--samples N` it runs the few-shot protocol: for each
//! seed, adapt on N labelled networks, rank the rest, report before/after beside the baselines
//! fitted on the same rows. With `--labels` and no `--samples` it adapts to every row and saves
//! the model (`--save-as`), which `nape predict --model NAME` then uses.

use super::model_args::{report_skipped, ModelArgs, SourceArgs};
use crate::train::adapt::{AdaptConfig, Base};
use crate::train::flows::{self, finetune::PHASES};
use crate::train::model;

/// Arguments of `nape finetune`.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// Model name (folder under models/) or path.
    #[arg(long, default_value = crate::predict::DEFAULT_MODEL)]
    pub model: String,
    /// What to adapt to.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Labelled networks per seed in the few-shot protocol (default 50 with --family; with
    /// --labels, none: adapt to every row and save the model).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Seeds of the few-shot protocol (each its own draw of networks).
    #[arg(long, default_value_t = 5)]
    pub seeds: usize,
    /// The most epochs cross-validation tries.
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Cross-validation folds on the labelled rows that choose the epochs and the weight of the
    /// learned residual (below 2: none; train --epochs epochs).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Train the heads only, keeping the pretrained encoder.
    #[arg(long)]
    pub heads_only: bool,
    /// The base line the heads' residual is added to.
    #[arg(long, value_enum, default_value_t = Base::Flops)]
    pub base: Base,
    /// The target is an error or a loss: lower is better.
    #[arg(long)]
    pub lower_is_better: bool,
    /// Evaluate on at most this many of the other networks.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Align the family's features onto the model's training statistics first.
    #[arg(long)]
    pub align_family: bool,
    /// Save the adapted model under this name (the first seed's, in the few-shot protocol).
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
    let source = a.source.source(None)?;
    let adapt = AdaptConfig {
        epochs: a.epochs,
        lr: a.lr,
        folds: a.folds,
        heads_only: a.heads_only,
        base: a.base,
        lower_is_better: a.lower_is_better,
        seed: 0,
    };
    let device = model::device(&a.common.device)?;
    let (dir, paths, target) =
        (a.common.model_dir(&a.model), a.common.paths(), a.source.target.as_deref());
    let samples = match (a.samples, &source) {
        (Some(n), _) => n,
        (None, flows::Source::Family(_)) => 50,
        (None, flows::Source::Labels(_)) => {
            let Some(name) = a.save_as.as_deref() else {
                return Err(crate::Error::Usage(
                    "--labels without --samples adapts to every row: name the model with --save-as NAME".into(),
                )
                .into());
            };
            let r =
                flows::finetune_all(&dir, &source, target, &adapt, &paths, device, name, quiet)?;
            return print_all(&r, a.json);
        }
    };
    if samples < 3 {
        return Err(crate::Error::Usage("--samples must be at least 3".into()).into());
    }
    let cfg = flows::FinetuneConfig {
        samples,
        seeds: a.seeds,
        limit: a.limit,
        align_family: a.align_family,
        adapt,
    };
    let report =
        flows::finetune(&dir, &source, target, &cfg, &paths, device, a.save_as.as_deref(), quiet)?;
    print_seeds(&report, samples, a.seeds, a.json)
}

/// Prints a model adapted to every row of a labels file; the exit code of its skipped rows.
fn print_all(r: &flows::FinetuneAllReport, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!(
            "{} adapted to {} networks of {} ({}): {} epochs, residual weight {}, \
             cross-validated spearman {:.4}, MAE {:.4}",
            r.model_dir.display(),
            r.n,
            r.family,
            r.target,
            r.choice.epochs,
            r.choice.residual_weight,
            r.choice.cv_spearman,
            r.choice.cv_mae
        );
        println!("run folder {}", r.run_dir.display());
    }
    Ok(report_skipped(&r.skipped))
}

/// Prints the few-shot runs' summary, phase by phase; the exit code of its skipped rows.
fn print_seeds(
    report: &flows::FinetuneReport,
    samples: usize,
    seeds: usize,
    json: bool,
) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        let s = &report.summary;
        println!(
            "{} {} with {} samples x {} seeds (run folder {}):",
            report.family,
            report.target,
            samples,
            seeds,
            report.run_dir.display()
        );
        for phase in PHASES {
            let get = |k: &str| s.get(&format!("{phase}_{k}")).copied().unwrap_or(f64::NAN);
            println!(
                "  {phase:<12} spearman {:.4} +- {:.4}   kendall tau {:.4} +- {:.4}",
                get("spearman_mean"),
                get("spearman_std"),
                get("kendalltau_mean"),
                get("kendalltau_std")
            );
        }
    }
    Ok(report_skipped(&report.skipped))
}
