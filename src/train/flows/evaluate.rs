//! `evaluate`: a model (or the members of deep ensembles) on labelled networks it has not
//! seen, beside every baseline on the same networks: metrics.json and predictions.csv.

use super::baselines::{counts, proxy_baselines, score_each, Fitted};
use super::{proxies_of, LabelledSet, Paths, RunDir, Source};
use crate::dataset::Record;
use crate::error::{Error, Result};
use crate::features::GraphFeatures;
use crate::train::align::{align, FeatureStats};
use crate::train::data::{self, Sample};
use crate::train::domain::{predict_ensemble, Predicted};
use crate::train::model::Model;
use crate::train::{score, score_unitless};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Model name.
    pub model: String,
    /// Family evaluated on.
    pub family: String,
    /// Target.
    pub target: String,
    /// Records evaluated.
    pub n: usize,
    /// Metrics of the model and of its baselines on the same records: #params, FLOPs, the
    /// published proxies (`proxy:<name>`, `best_proxy`), and the classical models fitted on
    /// the model's own fine-tuning rows where its folder keeps them (`ridge`, `ridge_logs`,
    /// `forest_graf`).
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Which published proxy `best_proxy` is (none when the records carry no proxy).
    pub best_proxy: Option<String>,
    /// Files of a labels file that could not be read, with why.
    pub skipped: Vec<(String, String)>,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// The indices of `set`'s records no model has trained or validated on (when the set is the
/// models' own family), `limit` of them drawn by `seed` when given.
pub fn eval_records(
    models: &[Model],
    set: &LabelledSet,
    limit: Option<usize>,
    seed: u64,
) -> Result<Vec<usize>> {
    let seen: HashSet<&str> = models
        .iter()
        .filter(|m| m.meta.family == set.family)
        .flat_map(|m| m.meta.seen_ids.iter().map(String::as_str))
        .collect();
    let recs = &set.records.records;
    let mut idx: Vec<usize> =
        (0..set.len()).filter(|&i| !seen.contains(recs[i].id.as_str())).collect();
    if let Some(n) = limit {
        // the draw `Dataset::sample` makes of the unseen records: ordered by id, shuffled
        idx.sort_by(|&a, &b| recs[a].id.cmp(&recs[b].id).then(a.cmp(&b)));
        crate::dataset::SplitMix64(seed).shuffle(&mut idx);
        idx.truncate(n);
    }
    if idx.is_empty() {
        return Err(Error::Model(format!(
            "no unseen {} record has target {}",
            set.family, set.target
        )));
    }
    Ok(idx)
}

/// Evaluates a model, or a deep ensemble of models trained on the same family and target
/// ([`predict_members`]), on the labelled networks of `source` it has not seen: metrics.json
/// and predictions.csv in a run folder. The first model's seed draws `limit` records.
/// `model_dir`'s fitted baselines ([`Fitted`]), where it has them, are scored too.
pub fn evaluate(
    models: &[Model],
    source: &Source,
    target: Option<&str>,
    limit: Option<usize>,
    align_family: bool,
    paths: &Paths,
    model_dir: Option<&Path>,
) -> Result<EvalReport> {
    let Some(model) = models.first() else {
        return Err(Error::Usage("nape eval needs a model".into()));
    };
    let (set, idx, samples) = eval_samples(models, source, target, limit, align_family, paths)?;
    let all = set.truth();
    let truth: Vec<f64> = idx.iter().map(|&i| all[i]).collect();
    let recs: Vec<&Record> = idx.iter().map(|&i| &set.records.records[i]).collect();
    let s_ref: Vec<&Sample> = samples.iter().collect();
    let g: Vec<&GraphFeatures> = samples.iter().map(|s| &s.features).collect();
    let ens = predict_ensemble(models, &g)?;
    let pred: Vec<(f64, f64)> = ens.iter().map(|p| (p.value, p.uncertainty)).collect();
    let p: Vec<f64> = pred.iter().map(|p| p.0).collect();
    let mut metrics = in_domain_metrics(&ens);
    // MAE and RMSE only where the model predicts the quantity it is scored against
    let same_target = set.family == model.meta.family && set.target == model.meta.target;
    let scored = if same_target { score(&p, &truth) } else { score_unitless(&p, &truth) };
    metrics.insert("model".to_string(), scored);
    metrics.extend(counts(&p, &s_ref, &truth));
    let owned: Vec<Record> = recs.iter().map(|r| (*r).clone()).collect();
    let (proxy_rows, best_proxy) = proxy_baselines(&owned, &truth, &set.target);
    metrics.extend(proxy_rows);
    let fitted = fitted_baselines(model_dir, &s_ref)?;
    metrics.extend(score_each(&fitted, &truth));
    let name = run_name(models);
    let run = RunDir::create(&paths.runs, "eval", &name)?;
    run.json("metrics.json", &metrics)?;
    run.predictions(&recs, &truth, &pred, &s_ref, &fitted)?;
    run.json(
        "config.json",
        &serde_json::json!({"model": name, "members": models.len(), "family": set.family,
                            "target": set.target, "limit": limit, "seed": model.meta.config.seed,
                            "align_family": align_family, "best_proxy": best_proxy,
                            "skipped": set.skipped}),
    )?;
    Ok(EvalReport {
        model: name,
        family: set.family.clone(),
        target: set.target.clone(),
        n: idx.len(),
        metrics,
        best_proxy,
        skipped: set.skipped.clone(),
        run_dir: run.path,
    })
}

/// The predictions of the baselines fitted beside the model in `model_dir`, where it has them.
fn fitted_baselines(
    model_dir: Option<&Path>,
    samples: &[&Sample],
) -> Result<Vec<(String, Vec<f64>)>> {
    match model_dir {
        Some(d) => {
            Ok(Fitted::load(d)?.map(|f| f.predict(samples)).transpose()?.unwrap_or_default())
        }
        None => Ok(Vec::new()),
    }
}

/// The `in_domain` row of the metrics, when the model reports the score.
fn in_domain_metrics(ens: &[Predicted]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let scores: Vec<f64> = ens.iter().filter_map(|p| p.in_domain).collect();
    let mut metrics = BTreeMap::new();
    if !scores.is_empty() {
        metrics.insert("in_domain".to_string(), in_domain_summary(&scores));
    }
    metrics
}

/// The labelled set of `source`, the records the models are scored on (at most `limit`,
/// none they have seen) and their features, aligned to the model's statistics with
/// `align_family`.
fn eval_samples(
    models: &[Model],
    source: &Source,
    target: Option<&str>,
    limit: Option<usize>,
    align_family: bool,
    paths: &Paths,
) -> Result<(LabelledSet, Vec<usize>, Vec<Sample>)> {
    let model = &models[0];
    let set = LabelledSet::load_lazy(source, target, proxies_of(model), paths)?;
    let idx = eval_records(models, &set, limit, model.meta.config.seed)?;
    let mut samples = set.samples_at(&idx, paths)?;
    if align_family {
        if models.len() > 1 {
            return Err(Error::Usage(
                "--align-family aligns to one model's statistics: give one model".into(),
            ));
        }
        align_samples(model, &mut samples, paths)?;
    }
    Ok((set, idx, samples))
}

/// One name per model folder (the members of an ensemble share theirs), joined by `+`.
fn run_name(models: &[Model]) -> String {
    let mut names: Vec<&str> = models.iter().map(|m| m.meta.name.as_str()).collect();
    names.dedup();
    names.join("+")
}

/// Mean, median, minimum and count of in-domain scores.
fn in_domain_summary(scores: &[f64]) -> BTreeMap<String, f64> {
    let mut v = scores.to_vec();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    BTreeMap::from([
        ("mean".to_string(), mean),
        ("median".to_string(), v[v.len() / 2]),
        ("min".to_string(), v[0]),
        ("n".to_string(), v.len() as f64),
    ])
}

/// Sets the in-domain reference of `models` (`train::domain::calibrate`) from the networks of
/// their own training family they have not seen (`limit` of them, drawn by the first model's
/// seed); returns the references. For models trained before `pretrain` calibrated them.
pub fn calibrate_domain(
    models: &mut [Model],
    source: &Source,
    limit: Option<usize>,
    paths: &Paths,
) -> Result<Vec<f64>> {
    let Some(model) = models.first() else {
        return Err(Error::Usage("calibrating needs a model".into()));
    };
    let set = LabelledSet::load_lazy(source, None, proxies_of(model), paths)?;
    if set.family != model.meta.family {
        return Err(Error::Usage(format!(
            "the in-domain reference is calibrated on the model's own family ({}), not {}",
            model.meta.family, set.family
        )));
    }
    let idx = eval_records(models, &set, limit, model.meta.config.seed)?;
    let samples = set.samples_at(&idx, paths)?;
    let g: Vec<&GraphFeatures> = samples.iter().map(|s| &s.features).collect();
    let name = model.meta.name.clone();
    crate::train::domain::calibrate(models, &g, false)?
        .into_iter()
        .map(|r| {
            r.ok_or_else(|| {
                Error::Model(format!(
                    "{name}: no fuzzy c-means centres, so no embedding distance to calibrate"
                ))
            })
        })
        .collect()
}

/// The training statistics of a model's features: from its metadata, or (for models saved
/// before they were recorded) recomputed from the training family's records it saw.
pub fn training_stats(model: &Model, paths: &Paths) -> Result<FeatureStats> {
    if let Some(s) = &model.meta.feature_stats {
        return Ok(s.clone());
    }
    let ds = data::load_family(&paths.data, &model.meta.family)?;
    let seen: HashSet<&str> = model.meta.seen_ids.iter().map(String::as_str).collect();
    let recs: Vec<Record> =
        ds.records.into_iter().filter(|r| seen.contains(r.id.as_str())).collect();
    if recs.is_empty() {
        return Err(Error::Model(
            "the model records no feature statistics and no training ids: cannot align".into(),
        ));
    }
    let names = proxies_of(model);
    let scorer = crate::proxies::FeatureScorer::new(names, &paths.data)?;
    let (f, t) = (&model.meta.family, &model.meta.target);
    let s = data::featurise(&recs, f, t, &paths.cache, names, &|cg| scorer.score(cg))?;
    let g: Vec<&GraphFeatures> = s.iter().map(|s| &s.features).collect();
    Ok(FeatureStats::of(&g, model.meta.dims.node_dim))
}

/// Aligns a family's featurised samples onto the model's training statistics.
pub fn align_samples(model: &Model, samples: &mut [Sample], paths: &Paths) -> Result<()> {
    let stats = training_stats(model, paths)?;
    let mut g: Vec<GraphFeatures> = samples.iter().map(|s| s.features.clone()).collect();
    align(&mut g, &stats, model.meta.dims.node_dim);
    for (s, g) in samples.iter_mut().zip(g) {
        s.features = g;
    }
    Ok(())
}
