//! `nape eval`: a model's metrics on labelled networks it has not trained on (a benchmark
//! family, or a labels file), beside the baselines on the same networks; writes metrics.json
//! and predictions.csv in a run folder.

use super::model_args::{report_skipped, ModelArgs, SourceArgs};
use crate::train::{flows, model};

/// Arguments of `nape eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model name (folder under models/) or path; several, comma-separated, are evaluated as
    /// one deep ensemble with all their members (the mean of their predictions; they must
    /// share family, target and proxies).
    #[arg(long, default_value = crate::predict::DEFAULT_MODEL, value_delimiter = ',')]
    pub model: Vec<String>,
    /// What to evaluate on.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Evaluate on this many records drawn by the model's seed (default: all unseen).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Align the family's features onto the model's training statistics (transductive: each
    /// feature column standardised within the family, for ranking the family's networks).
    #[arg(long)]
    pub align_family: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Before evaluating, set the model's in-domain reference from these networks (unseen
    /// networks of its own training family) and save it into the model folder; for models
    /// trained before `pretrain` recorded it (docs/predictor.md, "In domain").
    #[arg(long)]
    pub calibrate_domain: bool,
    /// Shared locations and device.
    #[command(flatten)]
    pub common: ModelArgs,
}

/// Runs `nape eval`.
pub fn run(a: &EvalArgs) -> anyhow::Result<i32> {
    let source = a.source.source(None)?;
    let device = model::device(&a.common.device)?;
    // each name is one model or a deep ensemble; several names pool their members
    let mut models = Vec::new();
    for m in &a.model {
        models.extend(model::Model::load_members(&a.common.model_dir(m), device)?);
    }
    let one_dir = (a.model.len() == 1).then(|| a.common.model_dir(&a.model[0]));
    if a.calibrate_domain {
        let Some(dir) = &one_dir else {
            anyhow::bail!(crate::Error::Usage("--calibrate-domain takes one model".into()));
        };
        let refs = flows::calibrate_domain(&mut models, &source, a.limit, &a.common.paths())?;
        model::Model::save_members(&mut models, dir)?;
        let r: Vec<String> = refs.iter().map(|r| format!("{r:.4}")).collect();
        eprintln!("in-domain reference of {} written: {}", dir.display(), r.join(" "));
    }
    let report = flows::evaluate(
        &models,
        &source,
        a.source.target.as_deref(),
        a.limit,
        a.align_family,
        &a.common.paths(),
        one_dir.as_deref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(report_skipped(&report.skipped))
}

/// The evaluation as a table: each model and baseline's metrics, in-domain scores, best proxy.
fn print_report(report: &flows::EvalReport) {
    println!(
        "{} on {} ({} records, target {}); run folder {}",
        report.model,
        report.family,
        report.n,
        report.target,
        report.run_dir.display()
    );
    let keys = ["spearman", "kendalltau", "kt_2dec", "pearson", "precision_10", "ndcg_10"];
    println!("{:<24} {}", "", keys.map(|k| format!(" {k:>12}")).join(""));
    for (who, m) in report.metrics.iter().filter(|(k, _)| k.as_str() != "in_domain") {
        let v: Vec<String> = keys
            .iter()
            .map(|k| m.get(*k).map(|v| format!(" {v:>12.4}")).unwrap_or(format!(" {:>12}", "-")))
            .collect();
        println!("{who:<24} {}", v.join(""));
    }
    if let Some(d) = report.metrics.get("in_domain") {
        let get = |k: &str| d.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "in_domain: mean {:.3}, median {:.3}, min {:.3} (1 = as close to the training \
             networks as 90% of the family's own)",
            get("mean"),
            get("median"),
            get("min")
        );
    }
    if let Some(b) = &report.best_proxy {
        println!("best_proxy is {b}, the published proxy of highest Spearman on these records");
    }
}
