//! The three training workflows behind the CLI: [`pretrain`] (unlabelled + labelled training
//! on one family, a checkpoint and a run folder), [`evaluate`] (a model on a family, with the
//! #params and FLOPs baselines on the same records) and [`finetune`] (few-shot adaptation on a
//! family, before/after on the rest, over several seeds).

use super::align::{align, FeatureStats};
use super::config::{member_seed, TrainConfig};
use super::data::{self, Sample};
use super::model::{Meta, Model};
use super::trainer::{mean_std, median_mad, Trainer};
use super::{score, score_ranking, score_unitless};
use crate::dataset::{Dataset, Record};
use crate::encoder::FeatureDims;
use crate::error::{write_atomic, Error, Result};
use crate::features::{self, GraphFeatures};
use crate::metrics;
use crate::proxies::FeatureScorer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// Where data, caches, models and run folders live.
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

    /// Writes `predictions.csv` (id, truth, prediction, uncertainty, params, flops).
    pub fn predictions(
        &self,
        records: &[&Record],
        truth: &[f64],
        pred: &[(f64, f64)],
        samples: &[&Sample],
    ) -> Result<()> {
        let mut s = String::from("id,truth,prediction,uncertainty,params,params_effective,flops\n");
        for (((r, t), p), x) in records.iter().zip(truth).zip(pred).zip(samples) {
            s.push_str(&format!(
                "{},{t},{},{},{},{},{}\n",
                csv_field(&r.id),
                p.0,
                p.1,
                x.params,
                x.params_effective,
                x.flops
            ));
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

/// What [`pretrain`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    /// Where the model was written.
    pub model_dir: PathBuf,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Held-out metrics of the model and its baselines, and timings.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Splits a family's labelled records for training: (test, val, train). The held-out test
/// cells are the first of the order `cfg.seed` draws; member `k` of an ensemble draws its
/// validation and training cells from the rest in its own order (member 0 takes them in the
/// seed's order, so a single model's split is what it always was).
pub fn split_labelled(
    ds: &Dataset,
    cfg: &TrainConfig,
    member: usize,
) -> (Vec<Record>, Vec<Record>, Vec<Record>) {
    let all = ds.sample(ds.len(), cfg.seed).records;
    let s = &cfg.supervised;
    let n_test = s.n_test.min(all.len());
    let test = all[..n_test].to_vec();
    let mut rest = all[n_test..].to_vec();
    if member > 0 {
        let n = rest.len();
        crate::dataset::SplitMix64(member_seed(cfg.seed, member)).shuffle_prefix(&mut rest, n);
    }
    let n_val = s.n_val.min(rest.len());
    let left = rest.len() - n_val;
    let n_train = if s.n_train == 0 { left } else { s.n_train.min(left) };
    let val = rest[..n_val].to_vec();
    let train = rest[n_val..n_val + n_train].to_vec();
    (test, val, train)
}

fn targets(records: &[Record], target: &str) -> Vec<f64> {
    records.iter().map(|r| r.target(target).unwrap_or(f64::NAN)).collect()
}

/// Pretrains a model on `cfg.family` (see the `train` module docs), saves it as
/// `paths.models/name`, evaluates it on the held-out test split, and writes a run folder.
pub fn pretrain(
    cfg: TrainConfig,
    name: &str,
    paths: &Paths,
    device: Device,
    quiet: bool,
) -> Result<PretrainReport> {
    let t_all = Instant::now();
    let mut trainer = Trainer::new(cfg.clone())?;
    trainer.quiet = quiet;
    let run = RunDir::create(&paths.runs, "pretrain", name)?;
    run.json("config.json", &cfg)?;
    let ds = data::load_family(&paths.data, &cfg.family)?.require(&cfg.target);
    if ds.is_empty() {
        return Err(Error::Model(format!("no {} record has target {}", cfg.family, cfg.target)));
    }
    let scorer = FeatureScorer::new(&cfg.proxies, &paths.data)?;
    let score_cg = |cg: &crate::graph::Cg| scorer.score(cg);
    let feat = |r: &[Record]| {
        data::featurise(r, &cfg.family, &cfg.target, &paths.cache, &cfg.proxies, &score_cg)
    };
    if cfg.pretrain.unlabelled > 0 && cfg.pretrain.epochs > 0 && cfg.family != "nb101" {
        return Err(Error::Usage(
            "contrastive pretraining draws unlabelled NB-101 cells: set pretrain.unlabelled = 0 for other families"
                .into(),
        ));
    }
    let t0 = Instant::now();
    let test = split_labelled(&ds, &cfg, 0).0;
    let s_test = feat(&test)?;
    let mut featurise_s = t0.elapsed().as_secs_f64();

    // the members of the deep ensemble share the held-out test cells; each draws its own
    // training, validation and unlabelled cells, initialisation, batches and augmentations, so
    // that they err apart (members trained on one split erred together on other families)
    let mut models = Vec::with_capacity(cfg.members);
    let (mut pretrain_s, mut supervised_s) = (0.0, 0.0);
    let (mut ridge_x, mut ridge_y) = (ndarray::Array2::zeros((0, 0)), Vec::new());
    for k in 0..cfg.members {
        if cfg.members > 1 {
            trainer.say(format!("== member {} of {}", k + 1, cfg.members));
        }
        let mseed = member_seed(cfg.seed, k);
        trainer.cfg.seed = mseed;
        let (_, val, train) = split_labelled(&ds, &cfg, k);
        trainer.say(format!(
            "{}: {} labelled records -> train {}, validation {}, held-out test {}",
            cfg.family,
            ds.len(),
            train.len(),
            val.len(),
            test.len()
        ));
        let t0 = Instant::now();
        let unl_records = if cfg.pretrain.unlabelled > 0 && cfg.pretrain.epochs > 0 {
            data::nb101_unlabelled(&paths.data, cfg.pretrain.unlabelled, mseed)?
        } else {
            Vec::new()
        };
        let (s_train, s_val, s_unl) = (feat(&train)?, feat(&val)?, feat(&unl_records)?);
        let dt = t0.elapsed().as_secs_f64();
        featurise_s += dt;
        trainer.say(format!(
            "featurised {} networks in {dt:.1} s (cached under {})",
            train.len() + val.len() + unl_records.len(),
            paths.cache.display()
        ));

        let y_train = targets(&train, &cfg.target);
        let lf_train: Vec<f64> = s_train.iter().map(|s| features::log_flops(&s.features)).collect();
        let slope =
            if cfg.supervised.flops_transform { ols_slope(&lf_train, &y_train) } else { 0.0 };
        let resid: Vec<f64> = y_train.iter().zip(&lf_train).map(|(y, x)| y - slope * x).collect();
        let (mu, sd) = mean_std(&resid);
        if slope != 0.0 {
            trainer.say(format!(
                "FLOPs transform: {} = {mu:.4} + {slope:.4} log10(1 + FLOPs) + residual (residual std {sd:.4})",
                cfg.target
            ));
        }
        let train_graphs: Vec<&GraphFeatures> = s_train.iter().map(|s| &s.features).collect();
        if k == 0 {
            // the classical baseline is fitted on the single model's (member 0's) cells
            ridge_x = globals(&train_graphs);
            ridge_y = y_train.clone();
        }
        let y_val = targets(&val, &cfg.target);
        let va_raw: Vec<(&GraphFeatures, f64)> =
            s_val.iter().zip(&y_val).map(|(s, &y)| (&s.features, y)).collect();
        let unl: Vec<&Sample> = s_unl.iter().collect();
        let sup = cfg.supervised.clone();

        let mut meta = Meta::new(name, &cfg);
        meta.member = k;
        meta.target_mean = mu;
        meta.target_std = sd;
        meta.flops_slope = slope;
        meta.target_spread = mean_std(&y_train).1;
        meta.target_mad = Some(median_mad(&y_train).1);
        meta.seen_ids = train.iter().chain(&val).map(|r| r.id.clone()).collect();
        meta.seen_ops = s_train
            .iter()
            .chain(&s_unl)
            .flat_map(|s| s.features.op.iter().copied())
            .collect::<std::collections::BTreeSet<i64>>()
            .into_iter()
            .collect();
        meta.feature_stats = Some(FeatureStats::of(&train_graphs, FeatureDims::current().node_dim));
        let mut model = Model::new(meta, device)?;

        let t1 = Instant::now();
        trainer.pretrain(&model, &unl)?;
        pretrain_s += t1.elapsed().as_secs_f64();

        let t2 = Instant::now();
        let tr: Vec<(&GraphFeatures, f64)> = s_train
            .iter()
            .zip(&y_train)
            .map(|(s, &y)| (&s.features, model.standardise(&s.features, y)))
            .collect();
        trainer.supervised(&model, &tr, &va_raw, sup.epochs, sup.lr, "supervised")?;
        if sup.fcm_epochs > 0 && cfg.heads.k > 1 {
            trainer.fit_fcm(&mut model, &train_graphs)?;
            trainer.supervised(&model, &tr, &va_raw, sup.fcm_epochs, sup.lr * 0.3, "fcm-heads")?;
        }
        supervised_s += t2.elapsed().as_secs_f64();
        models.push(model);
    }
    trainer.cfg.seed = cfg.seed;

    let mut metrics = BTreeMap::new();
    if !test.is_empty() {
        let t3 = Instant::now();
        let y_test = targets(&test, &cfg.target);
        let g: Vec<&GraphFeatures> = s_test.iter().map(|s| &s.features).collect();
        if models.len() > 1 {
            for (k, m) in models.iter().enumerate() {
                let p: Vec<f64> = m.predict(&g)?.into_iter().map(|p| p.0).collect();
                let sc = score(&p, &y_test);
                trainer.say(format!(
                    "member {k}: held-out spearman {:.4}, kendall tau {:.4}",
                    sc["spearman"], sc["kendalltau"]
                ));
            }
        }
        let pred = super::model::predict_members(&models, &g)?;
        let predict_s = t3.elapsed().as_secs_f64();
        let p: Vec<f64> = pred.iter().map(|p| p.0).collect();
        metrics.insert("model".to_string(), score(&p, &y_test));
        metrics.extend(baselines(&p, &s_test, &y_test));
        metrics.extend(proxy_baselines(&test, &y_test, &cfg.target).0);
        // ridge on the graph-level features (and the config's proxies among them) of the same
        // training cells: the classical model on the same split
        match crate::ensemble::baseline::fit(&ridge_x, &ridge_y)
            .and_then(|b| b.predict(&globals(&g)))
        {
            Ok(r) => {
                metrics.insert("ridge".to_string(), score(&r, &y_test));
            }
            Err(e) => trainer.say(format!("ridge baseline not fitted: {e}")),
        }
        let recs: Vec<&Record> = test.iter().collect();
        let samples: Vec<&Sample> = s_test.iter().collect();
        run.predictions(&recs, &y_test, &pred, &samples)?;
        trainer.say(format!(
            "held-out {} {}: spearman {:.4}, kendall tau {:.4} (#params {:.4}, FLOPs {:.4}); predicted in {predict_s:.2} s",
            test.len(),
            cfg.family,
            metrics["model"]["spearman"],
            metrics["model"]["kendalltau"],
            metrics["params"]["kendalltau"],
            metrics["flops"]["kendalltau"],
        ));
        let tau_of = |k: &str| metrics.get(k).and_then(|m| m.get("kendalltau")).copied();
        let n_best = metrics.get("best_proxy").and_then(|m| m.get("n")).copied();
        trainer.say(format!(
            "same split, kendall tau: ridge on the training cells' graph features {}; best \
             published proxy {}",
            tau_of("ridge").map_or("-".into(), |t| format!("{t:.4}")),
            match (tau_of("best_proxy"), n_best) {
                (Some(t), Some(n)) => format!("{t:.4} (on the {n} cells it covers)"),
                _ => "-".into(),
            }
        ));
    }
    let mut timing = BTreeMap::new();
    timing.insert("featurise_s".to_string(), featurise_s);
    timing.insert("pretrain_s".to_string(), pretrain_s);
    timing.insert("supervised_s".to_string(), supervised_s);
    timing.insert("total_s".to_string(), t_all.elapsed().as_secs_f64());
    metrics.insert("timing".to_string(), timing);
    for model in models.iter_mut() {
        for (k, v) in metrics.get("model").into_iter().flatten() {
            model.meta.metrics.insert(format!("{}_test_{k}", cfg.family), *v);
        }
        model.meta.metrics.insert("pretrain_s".into(), pretrain_s);
        model.meta.metrics.insert("supervised_s".into(), supervised_s);
    }
    let model_dir = paths.models.join(name);
    Model::save_members(&mut models, &model_dir)?;
    trainer.say(format!("model written to {}", model_dir.display()));
    run.json("metrics.json", &metrics)?;
    run.log(&trainer.log)?;
    Ok(PretrainReport { model_dir, run_dir: run.path, metrics })
}

fn params(s: &[Sample]) -> Vec<f64> {
    s.iter().map(|s| s.params).collect()
}

fn params_effective(s: &[Sample]) -> Vec<f64> {
    s.iter().map(|s| s.params_effective).collect()
}

/// The baselines every evaluation reports beside the model, on the same records: the file's
/// parameter count, the canonical graph's (what the output depends on), FLOPs, and the
/// parameter-free rank ensemble of the model with the canonical count (the mean of the two
/// ranks; a ranking, not an accuracy).
fn baselines(
    pred: &[f64],
    samples: &[Sample],
    truth: &[f64],
) -> Vec<(String, BTreeMap<String, f64>)> {
    let eff = params_effective(samples);
    let (rp, re) = (metrics::ranks(pred), metrics::ranks(&eff));
    let mean_rank: Vec<f64> = rp.iter().zip(&re).map(|(a, b)| 0.5 * (a + b)).collect();
    vec![
        ("params".into(), score_ranking(&params(samples), truth)),
        ("params_eff".into(), score_ranking(&eff, truth)),
        ("flops".into(), score_ranking(&flops(samples), truth)),
        ("model+params_eff".into(), score_ranking(&mean_rank, truth)),
    ]
}

/// The graphs' graph-level features as a matrix, a row per graph (the ridge baseline's input).
fn globals(gs: &[&GraphFeatures]) -> ndarray::Array2<f64> {
    let d = gs.first().map_or(0, |g| g.global.len());
    ndarray::Array2::from_shape_fn((gs.len(), d), |(r, c)| gs[r].global[c] as f64)
}

/// The zero-cost proxy scores the data files publish with the records (NAS-Bench-Suite-Zero's
/// `zc`: 13 proxies for NB-101 and TransNAS-Bench-101, Zen for NB-201), each scored on the
/// records where it is finite as `proxy:<name>` (with `n`, how many), and the best of them
/// (highest Spearman among those finite on at least 90 % as many records as the best-covered
/// one; NB-101's file covers about a third of the cells) also as `best_proxy`, whose name is
/// returned. It is chosen on the evaluated records themselves: an upper bound on what picking
/// one proxy in advance would give. Where the file publishes proxies per task or dataset
/// (`class_scene_jacov`, `cifar10_zen`), only those of the target's own
/// (`class_scene_val_accuracy`, `cifar10_test_ep200`) are kept.
#[allow(clippy::type_complexity)]
fn proxy_baselines(
    recs: &[Record],
    truth: &[f64],
    target: &str,
) -> (Vec<(String, BTreeMap<String, f64>)>, Option<String>) {
    let all: std::collections::BTreeSet<&str> =
        recs.iter().flat_map(|r| r.proxies.keys().map(String::as_str)).collect();
    // the longest `<dataset>_` that starts both the target and some proxy's name
    let prefix = all
        .iter()
        .flat_map(|n| n.match_indices('_').map(move |(i, _)| &n[..=i]))
        .filter(|p| target.starts_with(p))
        .max_by_key(|p| p.len());
    let names: Vec<&str> = match prefix {
        Some(p) => all.into_iter().filter(|n| n.starts_with(p)).collect(),
        None => all.into_iter().collect(),
    };
    let mut out = Vec::new();
    let mut scored = Vec::new();
    for name in names {
        let (v, t): (Vec<f64>, Vec<f64>) = recs
            .iter()
            .zip(truth)
            .filter_map(|(r, &t)| r.proxies.get(name).map(|&v| (v, t)))
            .filter(|(v, t)| v.is_finite() && t.is_finite())
            .unzip();
        if v.len() < 3 {
            continue;
        }
        let mut m = score_ranking(&v, &t);
        m.insert("n".to_string(), v.len() as f64);
        scored.push((name, v.len(), m.clone()));
        out.push((format!("proxy:{name}"), m));
    }
    let most = scored.iter().map(|s| s.1).max().unwrap_or(0);
    let mut best: Option<(f64, String, BTreeMap<String, f64>)> = None;
    for (name, n, m) in scored {
        let rho = m.get("spearman").copied().unwrap_or(f64::NAN);
        if n * 10 >= most * 9 && rho.is_finite() && best.as_ref().is_none_or(|b| rho > b.0) {
            best = Some((rho, name.to_string(), m));
        }
    }
    let name = best.map(|(_, name, m)| {
        out.push(("best_proxy".to_string(), m));
        name
    });
    (out, name)
}

fn flops(s: &[Sample]) -> Vec<f64> {
    s.iter().map(|s| s.flops).collect()
}

/// Featurises records as `model` reads them (with the proxies its config names).
fn featurise_for(
    model: &Model,
    recs: &[Record],
    family: &str,
    target: &str,
    paths: &Paths,
) -> Result<Vec<Sample>> {
    let names = &model.meta.config.proxies;
    let scorer = FeatureScorer::new(names, &paths.data)?;
    data::featurise(recs, family, target, &paths.cache, names, &|cg| scorer.score(cg))
}

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
    /// published proxies (`proxy:<name>`, `best_proxy`).
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Which published proxy `best_proxy` is (none when the records carry no proxy).
    pub best_proxy: Option<String>,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// The records of `family` with `target` a model has not seen (all of them for another
/// family), `limit` of them drawn by `seed` when given.
pub fn eval_records(
    model: &Model,
    data_dir: &Path,
    family: &str,
    target: &str,
    limit: Option<usize>,
    seed: u64,
) -> Result<Vec<Record>> {
    let ds = data::load_family(data_dir, family)?.require(target);
    let seen: std::collections::HashSet<&str> = if family == model.meta.family {
        model.meta.seen_ids.iter().map(String::as_str).collect()
    } else {
        Default::default()
    };
    let mut recs: Vec<Record> =
        ds.records.into_iter().filter(|r| !seen.contains(r.id.as_str())).collect();
    if let Some(n) = limit {
        let d = Dataset { family: family.to_string(), records: recs, issues: Vec::new() };
        recs = d.sample(n, seed).records;
    }
    if recs.is_empty() {
        return Err(Error::Model(format!("no unseen {family} record has target {target}")));
    }
    Ok(recs)
}

/// Evaluates a model, or a deep ensemble of models trained on the same family and target
/// ([`super::model::predict_members`]), on a family: metrics.json and predictions.csv in a run
/// folder. The first model's seed draws `limit` records; records any member trained or
/// validated on are left out.
pub fn evaluate(
    models: &[Model],
    family: &str,
    target: &str,
    limit: Option<usize>,
    align_family: bool,
    paths: &Paths,
) -> Result<EvalReport> {
    let Some(model) = models.first() else {
        return Err(Error::Usage("nape eval needs a model".into()));
    };
    let mut recs = eval_records(model, &paths.data, family, target, limit, model.meta.config.seed)?;
    if family == model.meta.family {
        let seen: std::collections::HashSet<&str> =
            models.iter().flat_map(|m| m.meta.seen_ids.iter().map(String::as_str)).collect();
        recs.retain(|r| !seen.contains(r.id.as_str()));
    }
    let mut samples = featurise_for(model, &recs, family, target, paths)?;
    if align_family {
        if models.len() > 1 {
            return Err(Error::Usage(
                "--align-family aligns to one model's statistics: give one model".into(),
            ));
        }
        align_samples(model, &mut samples, paths)?;
    }
    let truth = targets(&recs, target);
    let g: Vec<&GraphFeatures> = samples.iter().map(|s| &s.features).collect();
    let pred = super::model::predict_members(models, &g)?;
    let p: Vec<f64> = pred.iter().map(|p| p.0).collect();
    let mut metrics = BTreeMap::new();
    // MAE and RMSE only where the model predicts the quantity it is scored against.
    let same_target = family == model.meta.family && target == model.meta.target;
    let scored = if same_target { score(&p, &truth) } else { score_unitless(&p, &truth) };
    metrics.insert("model".to_string(), scored);
    metrics.extend(baselines(&p, &samples, &truth));
    let (proxy_rows, best_proxy) = proxy_baselines(&recs, &truth, target);
    metrics.extend(proxy_rows);
    // one name per model folder (the members of an ensemble share theirs)
    let mut names: Vec<&str> = models.iter().map(|m| m.meta.name.as_str()).collect();
    names.dedup();
    let name = names.join("+");
    let run = RunDir::create(&paths.runs, "eval", &name)?;
    run.json("metrics.json", &metrics)?;
    let recs_ref: Vec<&Record> = recs.iter().collect();
    let s_ref: Vec<&Sample> = samples.iter().collect();
    run.predictions(&recs_ref, &truth, &pred, &s_ref)?;
    run.json(
        "config.json",
        &serde_json::json!({"model": name, "members": models.len(), "family": family,
                            "target": target, "limit": limit, "seed": model.meta.config.seed,
                            "align_family": align_family, "best_proxy": best_proxy}),
    )?;
    Ok(EvalReport {
        model: name,
        family: family.to_string(),
        target: target.to_string(),
        n: recs.len(),
        metrics,
        best_proxy,
        run_dir: run.path,
    })
}

/// The training statistics of a model's features: from its metadata, or (for models saved
/// before they were recorded) recomputed from the training family's records it saw.
pub fn training_stats(model: &Model, paths: &Paths) -> Result<FeatureStats> {
    if let Some(s) = &model.meta.feature_stats {
        return Ok(s.clone());
    }
    let ds = data::load_family(&paths.data, &model.meta.family)?;
    let seen: std::collections::HashSet<&str> =
        model.meta.seen_ids.iter().map(String::as_str).collect();
    let recs: Vec<Record> =
        ds.records.into_iter().filter(|r| seen.contains(r.id.as_str())).collect();
    if recs.is_empty() {
        return Err(Error::Model(
            "the model records no feature statistics and no training ids: cannot align".into(),
        ));
    }
    let s = featurise_for(model, &recs, &model.meta.family, &model.meta.target, paths)?;
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

/// Fine-tuning hyper-parameters.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneConfig {
    /// Labelled samples of the new family.
    pub samples: usize,
    /// Seeds (each draws its own samples and trains from the pretrained weights).
    pub seeds: usize,
    /// Epochs over the samples.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Evaluate on at most this many of the other records (all when `None`).
    pub limit: Option<usize>,
    /// Align the family's features onto the training statistics first.
    pub align_family: bool,
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
    /// Per seed: metrics before (zero-shot) and after fine-tuning on the rest.
    pub runs: Vec<BTreeMap<String, BTreeMap<String, f64>>>,
    /// Mean and sample standard deviation over seeds of spearman and kendalltau, before and
    /// after.
    pub summary: BTreeMap<String, f64>,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// Fine-tunes the model in `model_dir` on `cfg.samples` labelled records of `family` for each
/// of `cfg.seeds` seeds, reporting before/after on the other records. The model fine-tuned
/// with the first seed is saved as `save_as` when given.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    model_dir: &Path,
    family: &str,
    target: &str,
    cfg: &FinetuneConfig,
    paths: &Paths,
    device: Device,
    save_as: Option<&str>,
    quiet: bool,
) -> Result<FinetuneReport> {
    let members = Model::load_members(model_dir, device)?;
    let train_mad = training_mads(&members, paths)?;
    let base = members
        .into_iter()
        .next()
        .ok_or_else(|| Error::Model(format!("{}: no model", model_dir.display())))?;
    let mut trainer = Trainer::new(base.meta.config.clone())?;
    trainer.quiet = quiet;
    let run = RunDir::create(&paths.runs, "finetune", &base.meta.name)?;
    run.json("config.json", cfg)?;
    let ds = data::load_family(&paths.data, family)?.require(target);
    let mut all_samples = featurise_for(&base, &ds.records, family, target, paths)?;
    if cfg.align_family {
        align_samples(&base, &mut all_samples, paths)?;
    }
    let index: BTreeMap<&str, usize> =
        ds.records.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let mut runs = Vec::new();
    for seed in 0..cfg.seeds.max(1) as u64 {
        let mut models = Model::load_members(model_dir, device)?;
        let picked = ds.sample(cfg.samples, seed + 1).records;
        let picked_ids: std::collections::HashSet<&str> =
            picked.iter().map(|r| r.id.as_str()).collect();
        let mut rest: Vec<usize> =
            (0..ds.len()).filter(|&i| !picked_ids.contains(ds.records[i].id.as_str())).collect();
        if let Some(n) = cfg.limit {
            crate::dataset::SplitMix64(seed + 101).shuffle_prefix(&mut rest, n);
            rest.truncate(n);
        }
        let truth: Vec<f64> =
            rest.iter().map(|&i| ds.records[i].target(target).unwrap_or(f64::NAN)).collect();
        let g_rest: Vec<&GraphFeatures> = rest.iter().map(|&i| &all_samples[i].features).collect();
        let before: Vec<f64> =
            super::model::predict_members(&models, &g_rest)?.into_iter().map(|p| p.0).collect();
        let y: Vec<f64> = picked.iter().map(|r| r.target(target).unwrap_or(f64::NAN)).collect();
        // a model with the FLOPs transform keeps its balance between the FLOPs term and the
        // heads: the slope is rescaled by the new target's spread over the training one (the
        // new family's target has other units); the heads then fit what it leaves
        let picked_g: Vec<&GraphFeatures> = picked
            .iter()
            .filter_map(|r| index.get(r.id.as_str()).map(|&i| &all_samples[i].features))
            .collect();
        let y_g: Vec<f64> = picked
            .iter()
            .zip(&y)
            .filter(|(r, _)| index.contains_key(r.id.as_str()))
            .map(|(_, &y)| y)
            .collect();
        let lf: Vec<f64> = picked_g.iter().map(|g| features::log_flops(g)).collect();
        let n_members = models.len();
        // The spreads are robust ones (median absolute deviation), and so is the heads'
        // standardisation below. Accuracy benchmarks are heavy-tailed: a few cells that do
        // not train (10 % on CIFAR-10) sit far below the bulk. Among 50 NB-201 cells, one
        // or two such cells set the sample std anywhere from 4 to 19 points, while the MAD
        // stays at 2-4. Scaled by the std, the slope and the targets would follow those
        // outliers: the bulk, whose order is what the pretrained heads know, would be
        // squeezed into a fraction of the unit scale they were trained on.
        let (_, spread) = median_mad(&y_g);
        let std = mean_std(&y_g).1;
        trainer.say(format!(
            "seed {seed}: {} labelled cells, target MAD {spread:.4} (std {std:.4})",
            y_g.len()
        ));
        for (k, model) in models.iter_mut().enumerate() {
            let before = model.meta.flops_slope;
            if train_mad[k] > 0.0 {
                model.meta.flops_slope *= spread / train_mad[k];
            }
            model.meta.target_spread = std;
            model.meta.target_mad = Some(spread);
            let resid: Vec<f64> =
                y_g.iter().zip(&lf).map(|(y, x)| y - model.meta.flops_slope * x).collect();
            let (mu, sd) = median_mad(&resid);
            if k == 0 && before != 0.0 {
                trainer.say(format!(
                    "seed {seed}: FLOPs slope {before:.4} -> {:.4} per decade (training MAD \
                     {:.4}); residual median {mu:.4}, MAD {sd:.4}",
                    model.meta.flops_slope, train_mad[k]
                ));
            }
            model.meta.target_mean = mu;
            model.meta.target_std = sd;
            model.meta.family = family.to_string();
            model.meta.target = target.to_string();
            model.meta.predicts = data::describe_target(family, target);
            let train: Vec<(&GraphFeatures, f64)> =
                picked_g.iter().zip(&y_g).map(|(&g, &y)| (g, model.standardise(g, y))).collect();
            // the ops of the new family's training graphs are seen from now on: training
            // reads them unmasked, so prediction must too
            let mut seen: std::collections::BTreeSet<i64> =
                model.meta.seen_ops.iter().copied().collect();
            seen.extend(picked_g.iter().flat_map(|g| g.op.iter().copied()));
            model.meta.seen_ops = seen.into_iter().collect();
            trainer.cfg.seed = member_seed(seed, k);
            trainer.cfg.supervised.batch = cfg.samples.max(2);
            let what = if n_members > 1 {
                format!("finetune seed {seed} member {k}")
            } else {
                format!("finetune seed {seed}")
            };
            trainer.supervised(model, &train, &[], cfg.epochs, cfg.lr, &what)?;
        }
        let after = super::model::predict_members(&models, &g_rest)?;
        let p_after: Vec<f64> = after.iter().map(|p| p.0).collect();
        let mut m = BTreeMap::new();
        m.insert("before".to_string(), score_ranking(&before, &truth));
        m.insert("after".to_string(), score(&p_after, &truth));
        // the naive competitors on the same split: #params (untrained), and the ridge baseline
        // fitted on the same labelled cells' graph-level features
        let rest_params: Vec<f64> = rest.iter().map(|&i| all_samples[i].params).collect();
        m.insert("params".to_string(), score_ranking(&rest_params, &truth));
        let rest_eff: Vec<f64> = rest.iter().map(|&i| all_samples[i].params_effective).collect();
        m.insert("params_eff".to_string(), score_ranking(&rest_eff, &truth));
        let ridge = crate::ensemble::baseline::fit(&globals(&picked_g), &y_g)
            .and_then(|b| b.predict(&globals(&g_rest)))?;
        m.insert("ridge".to_string(), score_ranking(&ridge, &truth));
        trainer.say(format!(
            "seed {seed}: spearman {:.4} -> {:.4}, kendall tau {:.4} -> {:.4} on {} records \
             (same split: #params spearman {:.4}, ridge on graph features {:.4})",
            m["before"]["spearman"],
            m["after"]["spearman"],
            m["before"]["kendalltau"],
            m["after"]["kendalltau"],
            rest.len(),
            m["params"]["spearman"],
            m["ridge"]["spearman"]
        ));
        if seed == 0 {
            let recs: Vec<&Record> = rest.iter().map(|&i| &ds.records[i]).collect();
            let ss: Vec<&Sample> = rest.iter().map(|&i| &all_samples[i]).collect();
            run.predictions(&recs, &truth, &after, &ss)?;
            if let Some(name) = save_as {
                for model in models.iter_mut() {
                    model.meta.name = name.to_string();
                    model.meta.seen_ids = picked.iter().map(|r| r.id.clone()).collect();
                }
                Model::save_members(&mut models, &paths.models.join(name))?;
            }
        }
        runs.push(m);
    }
    let mut summary = BTreeMap::new();
    for phase in ["before", "after", "params", "params_eff", "ridge"] {
        for metric in ["spearman", "kendalltau"] {
            let v: Vec<f64> = runs.iter().map(|r| r[phase][metric]).collect();
            let (m, s) = mean_std(&v);
            // sample standard deviation over seeds (n - 1)
            let n = v.len() as f64;
            let s = if v.len() > 1 { s * (n / (n - 1.0)).sqrt() } else { 0.0 };
            summary.insert(format!("{phase}_{metric}_mean"), m);
            summary.insert(format!("{phase}_{metric}_std"), s);
        }
    }
    let report = FinetuneReport {
        family: family.to_string(),
        target: target.to_string(),
        config: cfg.clone(),
        runs,
        summary,
        run_dir: run.path.clone(),
    };
    run.json("metrics.json", &report)?;
    run.log(&trainer.log)?;
    Ok(report)
}

/// Each member's robust spread of its training target ([`Meta::target_mad`]); for
/// checkpoints written before it was recorded, recomputed from the training family's labelled
/// cells the member saw (its training and validation cells).
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

/// Least-squares slope of `y` on `x` (0 when `x` does not vary).
fn ols_slope(x: &[f64], y: &[f64]) -> f64 {
    let (mx, _) = mean_std(x);
    let (my, _) = mean_std(y);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_baselines_keep_the_targets_own_proxies_and_pick_the_best_covered_one() {
        let truth: Vec<f64> = (0..20).map(f64::from).collect();
        let recs: Vec<Record> = (0..20)
            .map(|i| {
                let mut r = Record::new(format!("c{i}"), "tnb-micro", "s");
                let x = f64::from(i);
                // scene: synflow follows the truth but with noise; jacov is perfect but
                // published for only half the cells; object proxies belong to another task
                r.proxies
                    .insert("class_scene_synflow".into(), x + if i % 3 == 0 { 5.0 } else { 0.0 });
                if i % 2 == 0 {
                    r.proxies.insert("class_scene_jacov".into(), x);
                }
                r.proxies.insert("class_object_synflow".into(), -x);
                r.proxies.insert("class_sceneless_zen".into(), x);
                r
            })
            .collect();
        let (rows, best) = proxy_baselines(&recs, &truth, "class_scene_val_accuracy");
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["proxy:class_scene_jacov", "proxy:class_scene_synflow", "best_proxy"],
            "only the scene task's proxies"
        );
        assert_eq!(best.as_deref(), Some("class_scene_synflow"), "jacov covers half as many");
        assert_eq!(rows[0].1["n"], 10.0);
        assert!((rows[0].1["spearman"] - 1.0).abs() < 1e-12);
        assert_eq!(rows[2].1, rows[1].1);
        // no dataset prefix in common with the target (NB-101's zc names): all are kept
        let (rows, best) = proxy_baselines(&recs, &truth, "val_acc_ep108");
        assert_eq!(rows.len(), 5);
        assert_eq!(best.as_deref(), Some("class_sceneless_zen"));
        // no proxies: no rows
        let bare: Vec<Record> =
            (0..5).map(|i| Record::new(format!("c{i}"), "nb201", "s")).collect();
        assert_eq!(proxy_baselines(&bare, &truth[..5], "cifar10_test_ep200"), (vec![], None));
    }

    #[test]
    fn members_share_the_test_cells_and_draw_their_own_training_cells() {
        let records: Vec<Record> =
            (0..200).map(|i| Record::new(format!("c{i}"), "nb101", format!("s{i}"))).collect();
        let ds = Dataset { family: "nb101".into(), records, issues: Vec::new() };
        let mut cfg = TrainConfig::default();
        cfg.supervised.n_test = 50;
        cfg.supervised.n_val = 20;
        cfg.supervised.n_train = 60;
        let ids = |r: &[Record]| r.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let (t0, v0, tr0) = split_labelled(&ds, &cfg, 0);
        let (t1, v1, tr1) = split_labelled(&ds, &cfg, 1);
        assert_eq!(ids(&t0), ids(&t1));
        assert_ne!(ids(&tr0), ids(&tr1));
        for (v, tr) in [(&v0, &tr0), (&v1, &tr1)] {
            assert_eq!((v.len(), tr.len()), (20, 60));
            let test: std::collections::HashSet<String> = ids(&t0).into_iter().collect();
            assert!(ids(v).iter().chain(&ids(tr)).all(|i| !test.contains(i)));
            let mut both = ids(v);
            both.extend(ids(tr));
            both.sort();
            both.dedup();
            assert_eq!(both.len(), 80, "validation and training cells overlap");
        }
        // member 0 is the single model's split: test, then validation, then training in order
        let all = ids(&ds.sample(200, cfg.seed).records);
        assert_eq!(ids(&v0), all[50..70].to_vec());
        assert_eq!(ids(&tr0), all[70..130].to_vec());
    }
}
