//! Fine-tuning flows: [`finetune`], the few-shot protocol (per seed: adapt on `samples`
//! labelled networks, rank the rest, before/after beside the baselines fitted on the same
//! rows), and [`finetune_all`], which adapts a model to every labelled network and saves it
//! (with the classical baselines fitted on the same rows beside it).

use super::baselines::{counts, fitted_predictions, score_each, Fitted};
use super::{align_samples, proxies_of, LabelledSet, Paths, RunDir, Source};
use crate::dataset::{Dataset, Record, SplitMix64};
use crate::error::{Error, Result};
use crate::features::GraphFeatures;
use crate::train::adapt::{adapt, AdaptChoice, AdaptConfig};
use crate::train::data::{self, Sample};
use crate::train::model::{predict_members, Model};
use crate::train::parts::{mean_std, median_mad};
use crate::train::trainer::Trainer;
use crate::train::{score, score_ranking};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Device;

/// Fine-tuning settings.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneConfig {
    /// Labelled networks per seed in the few-shot protocol.
    pub samples: usize,
    /// Seeds (each draws its own networks and adapts from the pretrained weights).
    pub seeds: usize,
    /// Evaluate on at most this many of the other networks (all when `None`).
    pub limit: Option<usize>,
    /// Align the family's features onto the training statistics first.
    pub align_family: bool,
    /// How each adaptation runs (its seed is the protocol's seed).
    pub adapt: AdaptConfig,
}

/// What [`finetune`] measured, per seed and summarised.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    /// Family.
    pub family: String,
    /// Target.
    pub target: String,
    /// Settings.
    pub config: FinetuneConfig,
    /// Per seed: metrics before (zero-shot) and after fine-tuning on the rest, and the
    /// baselines on the same split.
    pub runs: Vec<BTreeMap<String, BTreeMap<String, f64>>>,
    /// Per seed: what cross-validation chose.
    pub choices: Vec<AdaptChoice>,
    /// Mean and sample standard deviation over seeds of spearman and kendalltau of each row.
    pub summary: BTreeMap<String, f64>,
    /// Files of a labels file that could not be read, with why.
    pub skipped: Vec<(String, String)>,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// The rows of every fine-tuning report, in order.
pub const PHASES: &[&str] =
    &["before", "after", "params", "params_eff", "flops", "ridge", "ridge_logs", "forest_graf"];

/// Loads the members in `model_dir`, their training MADs, and `source`'s labelled set as they
/// read it (aligned when asked).
fn setup(
    model_dir: &Path,
    source: &Source,
    target: Option<&str>,
    align_family: bool,
    paths: &Paths,
    device: Device,
) -> Result<(Vec<Model>, Vec<f64>, LabelledSet)> {
    let members = Model::load_members(model_dir, device)?;
    let mads = training_mads(&members, paths)?;
    let base = members
        .first()
        .ok_or_else(|| Error::Model(format!("{}: no model", model_dir.display())))?;
    let mut set = LabelledSet::load(source, target, proxies_of(base), paths)?;
    if align_family {
        align_samples(base, &mut set.samples, paths)?;
    }
    Ok((members, mads, set))
}

/// Adapts `models` to the networks `idx` of `set` and names what they now predict.
fn adapt_to(
    models: &mut [Model],
    set: &LabelledSet,
    idx: &[usize],
    mads: &[f64],
    cfg: &AdaptConfig,
    trainer: &mut Trainer,
) -> Result<AdaptChoice> {
    let truth = set.truth();
    let rows: Vec<(&GraphFeatures, f64)> =
        idx.iter().map(|&i| (&set.samples[i].features, truth[i])).collect();
    let y: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let (med, mad) = median_mad(&y);
    trainer.say(format!(
        "{} labelled networks: target median {med:.4}, MAD {mad:.4} (std {:.4})",
        rows.len(),
        mean_std(&y).1
    ));
    // the in-domain reference measured the pretraining family; the adapted model's family is
    // the user's, which it has now seen: its predictions are not shrunk (train::domain)
    for m in models.iter_mut() {
        m.meta.domain_reference = None;
        m.meta.spread_reference = None;
    }
    let choice = adapt(models, &rows, mads, cfg, trainer)?;
    let lower = if cfg.lower_is_better { " (lower is better)" } else { "" };
    for m in models.iter_mut() {
        m.meta.family = set.family.clone();
        m.meta.target = set.target.clone();
        m.meta.predicts = format!("{}{lower}", set.predicts);
        m.meta.seen_ids = idx.iter().map(|&i| set.records.records[i].id.clone()).collect();
        m.meta.metrics.insert("finetune_cv_spearman".into(), choice.cv_spearman);
        m.meta.metrics.insert("finetune_cv_mae".into(), choice.cv_mae);
    }
    Ok(choice)
}

/// Saves adapted `models` and the classical baselines fitted on the same rows as `name`.
fn save(
    models: &mut [Model],
    set: &LabelledSet,
    idx: &[usize],
    name: &str,
    paths: &Paths,
) -> Result<PathBuf> {
    for m in models.iter_mut() {
        m.meta.name = name.to_string();
    }
    let dir = paths.models.join(name);
    Model::save_members(models, &dir)?;
    let truth = set.truth();
    let s: Vec<&Sample> = idx.iter().map(|&i| &set.samples[i]).collect();
    let y: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
    Fitted::fit(&s, &y, 0)?.save(&dir)?;
    Ok(dir)
}

/// Fine-tunes the model in `model_dir` on `cfg.samples` labelled networks of `source` for each
/// of `cfg.seeds` seeds, reporting before/after on the other networks beside the baselines
/// fitted on the same rows. The model adapted with the first seed is saved as `save_as` when
/// given.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    model_dir: &Path,
    source: &Source,
    target: Option<&str>,
    cfg: &FinetuneConfig,
    paths: &Paths,
    device: Device,
    save_as: Option<&str>,
    quiet: bool,
) -> Result<FinetuneReport> {
    let (first, mads, set) = setup(model_dir, source, target, cfg.align_family, paths, device)?;
    let mut trainer = Trainer::new(first[0].meta.config.clone())?;
    trainer.quiet = quiet;
    let run = RunDir::create(&paths.runs, "finetune", &first[0].meta.name)?;
    run.json("config.json", cfg)?;
    drop(first);
    if cfg.samples >= set.len() {
        return Err(Error::Usage(format!(
            "--samples {} leaves none of the {} networks to rank",
            cfg.samples,
            set.len()
        )));
    }
    let (mut runs, mut choices) = (Vec::new(), Vec::new());
    let ctx = SeedContext { model_dir, set: &set, mads: &mads, cfg, paths, device };
    for seed in 0..cfg.seeds.max(1) as u64 {
        let (m, choice) = one_seed(&ctx, seed, &mut trainer, &run, save_as)?;
        runs.push(m);
        choices.push(choice);
    }
    let report = FinetuneReport {
        family: set.family.clone(),
        target: set.target.clone(),
        config: cfg.clone(),
        summary: summarise(&runs),
        runs,
        choices,
        skipped: set.skipped.clone(),
        run_dir: run.path.clone(),
    };
    run.json("metrics.json", &report)?;
    run.log(&trainer.log)?;
    Ok(report)
}

/// What every seed of [`finetune`] reads.
struct SeedContext<'a> {
    model_dir: &'a Path,
    set: &'a LabelledSet,
    mads: &'a [f64],
    cfg: &'a FinetuneConfig,
    paths: &'a Paths,
    device: Device,
}

type Rows = BTreeMap<String, BTreeMap<String, f64>>;

/// One seed of the protocol: draw the labelled networks, adapt fresh members to them, score
/// before/after and the baselines on the rest (seed 0 also writes predictions.csv and saves
/// the model as `save_as`).
fn one_seed(
    ctx: &SeedContext,
    seed: u64,
    trainer: &mut Trainer,
    run: &RunDir,
    save_as: Option<&str>,
) -> Result<(Rows, AdaptChoice)> {
    let SeedContext { model_dir, set, mads, cfg, paths, device } = *ctx;
    let truth = set.truth();
    let mut models = Model::load_members(model_dir, device)?;
    let order = set.records.shuffled(seed + 1);
    let picked = &order[..cfg.samples];
    let mut rest: Vec<usize> = (0..set.len()).filter(|i| !picked.contains(i)).collect();
    if let Some(n) = cfg.limit {
        SplitMix64(seed + 101).shuffle_prefix(&mut rest, n);
        rest.truncate(n);
    }
    let y_rest: Vec<f64> = rest.iter().map(|&i| truth[i]).collect();
    let s_rest: Vec<&Sample> = rest.iter().map(|&i| &set.samples[i]).collect();
    let g_rest: Vec<&GraphFeatures> = s_rest.iter().map(|s| &s.features).collect();
    let before: Vec<f64> = predict_members(&models, &g_rest)?.into_iter().map(|p| p.0).collect();
    trainer.say(format!("== seed {seed}"));
    let acfg = AdaptConfig { seed, ..cfg.adapt.clone() };
    let choice = adapt_to(&mut models, set, picked, mads, &acfg, trainer)?;
    let after = predict_members(&models, &g_rest)?;
    let p_after: Vec<f64> = after.iter().map(|p| p.0).collect();
    let mut m = BTreeMap::new();
    m.insert("before".to_string(), score_ranking(&before, &y_rest));
    m.insert("after".to_string(), score(&p_after, &y_rest));
    m.extend(counts(&p_after, &s_rest, &y_rest).into_iter().filter(|(k, _)| !k.contains('+')));
    let s_pick: Vec<&Sample> = picked.iter().map(|&i| &set.samples[i]).collect();
    let y_pick: Vec<f64> = picked.iter().map(|&i| truth[i]).collect();
    m.extend(score_each(&fitted_predictions(&s_pick, &y_pick, &s_rest, seed), &y_rest));
    log_seed(trainer, seed, &m, rest.len());
    if seed == 0 {
        let recs: Vec<&Record> = rest.iter().map(|&i| &set.records.records[i]).collect();
        run.predictions(&recs, &y_rest, &after, &s_rest, &[])?;
        if let Some(name) = save_as {
            save(&mut models, set, picked, name, paths)?;
        }
    }
    Ok((m, choice))
}

fn log_seed(trainer: &mut Trainer, seed: u64, m: &Rows, n: usize) {
    let row = |k: &str| m.get(k).map_or(f64::NAN, |r| r["spearman"]);
    trainer.say(format!(
        "seed {seed}: spearman {:.4} -> {:.4} on {n} networks (same split: #params {:.4}, \
         FLOPs {:.4}, ridge {:.4}, ridge on log #params + log FLOPs {:.4}, forest on GRAF \
         features {:.4})",
        row("before"),
        row("after"),
        row("params"),
        row("flops"),
        row("ridge"),
        row("ridge_logs"),
        row("forest_graf")
    ));
}

/// Mean and sample standard deviation over seeds of each phase's spearman and kendalltau.
fn summarise(runs: &[Rows]) -> BTreeMap<String, f64> {
    let mut summary = BTreeMap::new();
    for phase in PHASES {
        for metric in ["spearman", "kendalltau"] {
            let v: Vec<f64> =
                runs.iter().filter_map(|r| r.get(*phase).map(|m| m[metric])).collect();
            if v.is_empty() {
                continue;
            }
            let (m, s) = mean_std(&v);
            // sample standard deviation over seeds (n - 1)
            let n = v.len() as f64;
            let s = if v.len() > 1 { s * (n / (n - 1.0)).sqrt() } else { 0.0 };
            summary.insert(format!("{phase}_{metric}_mean"), m);
            summary.insert(format!("{phase}_{metric}_std"), s);
        }
    }
    summary
}

/// What [`finetune_all`] did.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneAllReport {
    /// The labels' family name.
    pub family: String,
    /// Target.
    pub target: String,
    /// Networks it was adapted on.
    pub n: usize,
    /// What cross-validation chose.
    pub choice: AdaptChoice,
    /// Files that could not be read, with why.
    pub skipped: Vec<(String, String)>,
    /// The saved model.
    pub model_dir: PathBuf,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// Adapts the model in `model_dir` to every labelled network of `source` and saves it (with
/// the classical baselines fitted on the same rows) as `save_as`.
#[allow(clippy::too_many_arguments)]
pub fn finetune_all(
    model_dir: &Path,
    source: &Source,
    target: Option<&str>,
    cfg: &AdaptConfig,
    paths: &Paths,
    device: Device,
    save_as: &str,
    quiet: bool,
) -> Result<FinetuneAllReport> {
    let (mut models, mads, set) = setup(model_dir, source, target, false, paths, device)?;
    let mut trainer = Trainer::new(models[0].meta.config.clone())?;
    trainer.quiet = quiet;
    let run = RunDir::create(&paths.runs, "finetune", save_as)?;
    run.json("config.json", cfg)?;
    let all: Vec<usize> = (0..set.len()).collect();
    let choice = adapt_to(&mut models, &set, &all, &mads, cfg, &mut trainer)?;
    let dir = save(&mut models, &set, &all, save_as, paths)?;
    trainer.say(format!("model written to {}", dir.display()));
    let report = FinetuneAllReport {
        family: set.family.clone(),
        target: set.target.clone(),
        n: set.len(),
        choice,
        skipped: set.skipped.clone(),
        model_dir: dir,
        run_dir: run.path.clone(),
    };
    run.json("metrics.json", &report)?;
    run.log(&trainer.log)?;
    Ok(report)
}

/// Each member's robust spread of its training target ([`crate::train::model::Meta::target_mad`]);
/// for checkpoints written before it was recorded, recomputed from the training family's
/// labelled cells the member saw (its training and validation cells).
fn training_mads(members: &[Model], paths: &Paths) -> Result<Vec<f64>> {
    let mut ds: Option<Dataset> = None;
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        if let Some(v) = m.meta.target_mad {
            out.push(v);
            continue;
        }
        if m.meta.flops_slope == 0.0 {
            // no FLOPs term to rescale
            out.push(0.0);
            continue;
        }
        if ds.is_none() {
            ds = Some(data::load_family(&paths.data, &m.meta.family)?);
        }
        let seen: std::collections::HashSet<&str> =
            m.meta.seen_ids.iter().map(String::as_str).collect();
        let y: Vec<f64> = ds
            .iter()
            .flat_map(|d| &d.records)
            .filter(|r| seen.contains(r.id.as_str()))
            .filter_map(|r| r.target(&m.meta.target))
            .collect();
        if y.len() < 2 {
            return Err(Error::Model(format!(
                "{}: the model records no target MAD, and fewer than 2 of its {} training \
                 cells are labelled with {} in {}: cannot rescale its FLOPs slope",
                m.meta.name,
                seen.len(),
                m.meta.target,
                m.meta.family
            )));
        }
        out.push(median_mad(&y).1);
    }
    Ok(out)
}
