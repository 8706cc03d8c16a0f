//! `pretrain`: a model (or deep ensemble) trained from scratch on one labelled set, evaluated on
//! its held-out split beside the baselines, saved with its run folder.

use super::baselines::{counts, fitted_predictions, proxy_baselines, score_each};
use super::mix::{self, Groups};
use super::{LabelledSet, Paths, RunDir, Source};
use crate::dataset::Dataset;
use crate::encoder::FeatureDims;
use crate::error::{Error, Result};
use crate::features::{self, GraphFeatures};
use crate::train::align::FeatureStats;
use crate::train::config::{member_seed, SupervisedConfig, TrainConfig};
use crate::train::data::{self, Sample};
use crate::train::model::{predict_members, Meta, Model};
use crate::train::parts::{mean_std, median_mad, parts_of, slope_within, RowParts};
use crate::train::score;
use crate::train::trainer::Trainer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

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

/// Held-out, validation and training sizes for `n` labelled networks: the config's, or, when
/// they leave fewer than 10 networks to train on (a user's labels file of a few hundred),
/// a fifth held out and a tenth for validation.
fn sizes(n: usize, s: &SupervisedConfig) -> (usize, usize) {
    if s.n_test + s.n_val + 10 <= n {
        (s.n_test, s.n_val)
    } else {
        ((n as f64 * 0.2).round() as usize, (n as f64 * 0.1).round() as usize)
    }
}

/// Splits a set's labelled records for training, as indices: (test, val, train). The held-out
/// test records are the first of the order `cfg.seed` draws; member `k` of an ensemble draws
/// its validation and training records from the rest in its own order (member 0 takes them in
/// the seed's order, so a single model's split is what it always was).
pub fn split_labelled(
    ds: &Dataset,
    cfg: &TrainConfig,
    member: usize,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let all = ds.shuffled(cfg.seed);
    let s = &cfg.supervised;
    let (n_test, n_val) = sizes(all.len(), s);
    let n_test = n_test.min(all.len());
    let test = all[..n_test].to_vec();
    let mut rest = all[n_test..].to_vec();
    if member > 0 {
        let n = rest.len();
        crate::dataset::SplitMix64(member_seed(cfg.seed, member)).shuffle_prefix(&mut rest, n);
    }
    let n_val = n_val.min(rest.len());
    let left = rest.len() - n_val;
    let n_train = if s.n_train == 0 { left } else { s.n_train.min(left) };
    let val = rest[..n_val].to_vec();
    let train = rest[n_val..n_val + n_train].to_vec();
    (test, val, train)
}

/// [`split_labelled`], or a mix's split part by part ([`mix::split_groups`]).
fn split(
    set: &LabelledSet,
    cfg: &TrainConfig,
    member: usize,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    match &set.groups {
        Some(g) => mix::split_groups(g, &cfg.mix, cfg.seed, member),
        None => split_labelled(&set.records, cfg, member),
    }
}

/// Pretrains a model on `cfg.family`'s labelled cells (see the `train` module docs).
pub fn pretrain(
    cfg: TrainConfig,
    name: &str,
    paths: &Paths,
    device: Device,
    quiet: bool,
) -> Result<PretrainReport> {
    let set = LabelledSet::load_lazy(
        &Source::Family(cfg.family.clone()),
        Some(&cfg.target),
        &cfg.proxies,
        paths,
    )?;
    pretrain_set(cfg, &set, name, paths, device, quiet)
}

/// Pretrains a model on `set` (its family and target replace the config's), saves it as
/// `paths.models/name`, evaluates it on the held-out split, and writes a run folder.
pub fn pretrain_set(
    mut cfg: TrainConfig,
    set: &LabelledSet,
    name: &str,
    paths: &Paths,
    device: Device,
    quiet: bool,
) -> Result<PretrainReport> {
    let t_all = Instant::now();
    cfg.family = set.family.clone();
    cfg.target = set.target.clone();
    let mut trainer = Trainer::new(cfg.clone())?;
    trainer.quiet = quiet;
    let run = RunDir::create(&paths.runs, "pretrain", name)?;
    run.json("config.json", &cfg)?;
    let (test, _, train) = split(set, &cfg, 0);
    let mut timing = BTreeMap::new();
    let mut models = Vec::with_capacity(cfg.members);
    for k in 0..cfg.members {
        if cfg.members > 1 {
            trainer.say(format!("== member {} of {}", k + 1, cfg.members));
        }
        models.push(train_member(&mut trainer, &cfg, set, k, name, paths, device, &mut timing)?);
    }
    trainer.cfg.seed = cfg.seed;
    let mut metrics = BTreeMap::new();
    if !test.is_empty() {
        metrics = match &set.groups {
            Some(g) => mix_held_out(&mut trainer, &mut models, set, g, &test, paths, &run)?,
            None => held_out(&mut trainer, &mut models, set, &test, &train, paths, &run)?,
        };
    }
    timing.insert("total_s".to_string(), t_all.elapsed().as_secs_f64());
    for model in models.iter_mut() {
        for (k, v) in metrics.get("model").into_iter().flatten() {
            model.meta.metrics.insert(format!("{}_test_{k}", cfg.family), *v);
        }
        for k in ["pretrain_s", "supervised_s"] {
            model.meta.metrics.insert(k.into(), timing.get(k).copied().unwrap_or(0.0));
        }
    }
    metrics.insert("timing".to_string(), timing);
    let model_dir = paths.models.join(name);
    Model::save_members(&mut models, &model_dir)?;
    trainer.say(format!("model written to {}", model_dir.display()));
    run.json("metrics.json", &metrics)?;
    run.log(&trainer.log)?;
    Ok(PretrainReport { model_dir, run_dir: run.path, metrics })
}

/// Unlabelled networks for member `k`'s contrastive stage: NB-101 cells drawn from the whole
/// space for NB-101 (all of them for an NB-101 set, half of them for a mix with an NB-101
/// part), the set's own networks of every other family (their graphs only) for the rest.
fn unlabelled(
    cfg: &TrainConfig,
    set: &LabelledSet,
    mseed: u64,
    paths: &Paths,
) -> Result<Vec<Sample>> {
    let want = cfg.pretrain.unlabelled;
    if want == 0 || cfg.pretrain.epochs == 0 {
        return Ok(Vec::new());
    }
    let family = |i: usize| match &set.groups {
        Some(g) => g.family[g.of[i] as usize].as_str(),
        None => set.family.as_str(),
    };
    let mut own: Vec<usize> = (0..set.len()).filter(|&i| family(i) != "nb101").collect();
    let has_nb101 = own.len() < set.len();
    let n_space = match (has_nb101, own.is_empty()) {
        (false, _) => 0,
        (true, true) => want,
        (true, false) => want / 2,
    };
    let mut out = Vec::with_capacity(want);
    if n_space > 0 {
        let recs = data::nb101_unlabelled(&paths.data, n_space, mseed)?;
        let scorer = crate::proxies::FeatureScorer::new(&cfg.proxies, &paths.data)?;
        let score = |cg: &crate::graph::Cg| scorer.score(cg);
        out = data::featurise(&recs, "nb101", &cfg.target, &paths.cache, &cfg.proxies, &score)?;
    }
    let n = (want - n_space).min(own.len());
    crate::dataset::SplitMix64(mseed).shuffle_prefix(&mut own, n);
    out.extend(set.samples_at(&own[..n], paths)?);
    Ok(out)
}

/// Trains member `k`: its own split, contrastive pretraining, supervised epochs, fuzzy
/// c-means and the mixed heads.
#[allow(clippy::too_many_arguments)]
fn train_member(
    trainer: &mut Trainer,
    cfg: &TrainConfig,
    set: &LabelledSet,
    k: usize,
    name: &str,
    paths: &Paths,
    device: Device,
    timing: &mut BTreeMap<String, f64>,
) -> Result<Model> {
    let mseed = member_seed(cfg.seed, k);
    trainer.cfg.seed = mseed;
    let (test, val, train) = split(set, cfg, k);
    trainer.say(format!(
        "{}: {} labelled records -> train {}, validation {}, held-out test {}",
        set.family,
        set.len(),
        train.len(),
        val.len(),
        test.len()
    ));
    if train.len() < 2 {
        return Err(Error::Model(format!("{} labelled records leave none to train on", set.len())));
    }
    let t0 = Instant::now();
    let s_unl = unlabelled(cfg, set, mseed, paths)?;
    let truth = set.truth();
    let (f_train, f_val) = (set.samples_at(&train, paths)?, set.samples_at(&val, paths)?);
    *timing.entry("featurise_s".into()).or_default() += t0.elapsed().as_secs_f64();
    let s_train: Vec<&Sample> = f_train.iter().collect();
    let train_graphs: Vec<&GraphFeatures> = s_train.iter().map(|s| &s.features).collect();
    let y_raw: Vec<f64> = train.iter().map(|&i| truth[i]).collect();
    let (y_train, slopes) = base_line(trainer, cfg, set, &train, &train_graphs, y_raw);
    let seen: Vec<usize> = train.iter().chain(&val).copied().collect();
    let meta = member_meta(cfg, set, name, k, &seen, &train_graphs, &y_train, slopes, &s_unl);
    let mut model = Model::new(meta, device)?;

    let t1 = Instant::now();
    let unl: Vec<&Sample> = s_unl.iter().collect();
    trainer.pretrain(&model, &unl)?;
    *timing.entry("pretrain_s".into()).or_default() += t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let va: Vec<(&GraphFeatures, f64)> =
        f_val.iter().zip(&val).map(|(s, &i)| (&s.features, truth[i])).collect();
    let tr: Vec<(&GraphFeatures, f64)> =
        train_graphs.iter().zip(&y_train).map(|(&g, &y)| (g, model.standardise(g, y))).collect();
    supervise(trainer, &mut model, cfg, set, (&train, &val), &tr, &va)?;
    *timing.entry("supervised_s".into()).or_default() += t2.elapsed().as_secs_f64();
    Ok(model)
}

/// Member `k`'s meta before training: the base line's `slopes`, the residual's location and
/// scale, the target's spread, and what it has seen (the `seen` records' ids, the ops of its
/// training and unlabelled graphs, the training graphs' feature statistics).
#[allow(clippy::too_many_arguments)]
fn member_meta(
    cfg: &TrainConfig,
    set: &LabelledSet,
    name: &str,
    k: usize,
    seen: &[usize],
    train_graphs: &[&GraphFeatures],
    y_train: &[f64],
    slopes: [f64; 3],
    unlabelled: &[Sample],
) -> Meta {
    let mut meta = Meta::new(name, cfg);
    [meta.flops_slope, meta.params_slope, meta.depth_slope] = slopes;
    let resid: Vec<f64> = y_train.iter().zip(train_graphs).map(|(y, g)| y - meta.base(g)).collect();
    let (mu, sd) = mean_std(&resid);
    meta.predicts = set.predicts.clone();
    meta.member = k;
    meta.target_mean = mu;
    meta.target_std = sd;
    meta.target_spread = mean_std(y_train).1;
    meta.target_mad = Some(median_mad(y_train).1);
    meta.seen_ids = seen.iter().map(|&i| set.records.records[i].id.clone()).collect();
    meta.seen_ops = train_graphs
        .iter()
        .copied()
        .chain(unlabelled.iter().map(|s| &s.features))
        .flat_map(|g| g.op.iter().copied())
        .collect::<std::collections::BTreeSet<i64>>()
        .into_iter()
        .collect();
    meta.feature_stats = Some(FeatureStats::of(train_graphs, FeatureDims::current().node_dim));
    meta
}

/// The supervised epochs on `tr` (validated on `va`), then fuzzy c-means on the training
/// graphs and the mixed heads' epochs; a mix's batches and validation go part by part (the
/// rows `(train, val)` say which).
fn supervise(
    trainer: &mut Trainer,
    model: &mut Model,
    cfg: &TrainConfig,
    set: &LabelledSet,
    (train, val): (&[usize], &[usize]),
    tr: &[(&GraphFeatures, f64)],
    va: &[(&GraphFeatures, f64)],
) -> Result<()> {
    let sup = &cfg.supervised;
    let of = |rows: &[usize]| set.groups.as_ref().map(|g| rows.iter().map(|&i| g.of[i]).collect());
    let (g_train, g_val): (Option<Vec<u32>>, Option<Vec<u32>>) = (of(train), of(val));
    let family = set.groups.as_ref().map(mix::family_ids).unwrap_or_default();
    let groups = g_train.as_deref().zip(g_val.as_deref()).map(|(train, val)| RowParts {
        train,
        val,
        family: &family,
    });
    trainer.supervised(model, tr, va, groups, sup.epochs, sup.lr, "supervised")?;
    if sup.fcm_epochs > 0 && cfg.heads.k > 1 {
        let graphs: Vec<&GraphFeatures> = tr.iter().map(|(g, _)| *g).collect();
        trainer.fit_fcm(model, &graphs)?;
        trainer.supervised(model, tr, va, groups, sup.fcm_epochs, sup.lr * 0.3, "fcm-heads")?;
    }
    Ok(())
}

/// A mix's held-out scores, part by part (`<part>/model`, `<part>/params`, `<part>/flops`,
/// ...): the model's ranking within each part beside the counts'. Calibrates the in-domain
/// reference on all the held-out networks and writes predictions.csv (the part in the id).
fn mix_held_out(
    trainer: &mut Trainer,
    models: &mut [Model],
    set: &LabelledSet,
    groups: &Groups,
    test: &[usize],
    paths: &Paths,
    run: &RunDir,
) -> Result<BTreeMap<String, BTreeMap<String, f64>>> {
    let truth = set.truth();
    let f_test = set.samples_at(test, paths)?;
    let g: Vec<&GraphFeatures> = f_test.iter().map(|s| &s.features).collect();
    crate::train::domain::calibrate(models, &g, true)?;
    let pred = predict_members(models, &g)?;
    let mut metrics = BTreeMap::new();
    let mut parts = parts_of(&test.iter().map(|&i| groups.of[i]).collect::<Vec<_>>());
    parts.resize(groups.names.len(), Vec::new());
    for (rows, name) in parts.into_iter().zip(&groups.names) {
        let p: Vec<f64> = rows.iter().map(|&r| pred[r].0).collect();
        let y: Vec<f64> = rows.iter().map(|&r| truth[test[r]]).collect();
        let s: Vec<&Sample> = rows.iter().map(|&r| &f_test[r]).collect();
        let model = crate::train::score_unitless(&p, &y);
        let base = counts(&p, &s, &y);
        trainer.say(format!(
            "held-out {} of {name}: spearman {:.4} (#params {:.4}, FLOPs {:.4})",
            rows.len(),
            model["spearman"],
            base[0].1["spearman"],
            base[2].1["spearman"]
        ));
        metrics.insert(format!("{name}/model"), model);
        metrics.extend(base.into_iter().map(|(b, m)| (format!("{name}/{b}"), m)));
    }
    let recs: Vec<_> = test
        .iter()
        .map(|&i| {
            let mut r = set.records.records[i].clone();
            r.id = format!("{}/{}", groups.names[groups.of[i] as usize], r.id);
            r
        })
        .collect();
    let y: Vec<f64> = test.iter().map(|&i| truth[i]).collect();
    let s: Vec<&Sample> = f_test.iter().collect();
    run.predictions(&recs.iter().collect::<Vec<_>>(), &y, &pred, &s, &[])?;
    Ok(metrics)
}

/// Scores the models on the held-out `test` records beside the baselines (the classical ones
/// fitted on member 0's `train` records), writes predictions.csv, logs the summary.
fn held_out(
    trainer: &mut Trainer,
    models: &mut [Model],
    set: &LabelledSet,
    test: &[usize],
    train: &[usize],
    paths: &Paths,
    run: &RunDir,
) -> Result<BTreeMap<String, BTreeMap<String, f64>>> {
    let truth = set.truth();
    let y_test: Vec<f64> = test.iter().map(|&i| truth[i]).collect();
    let (f_test, f_train) = (set.samples_at(test, paths)?, set.samples_at(train, paths)?);
    let t3 = Instant::now();
    let s_test: Vec<&Sample> = f_test.iter().collect();
    let g: Vec<&GraphFeatures> = s_test.iter().map(|s| &s.features).collect();
    // the in-domain reference, from the held-out networks' embeddings (not their labels)
    let refs = crate::train::domain::calibrate(models, &g, false)?;
    let refs: Vec<String> =
        refs.iter().map(|r| r.map_or("none (no centres)".into(), |r| format!("{r:.4}"))).collect();
    trainer.say(format!("in-domain reference (members): {}", refs.join(" ")));
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
    let pred = predict_members(models, &g)?;
    let predict_s = t3.elapsed().as_secs_f64();
    let p: Vec<f64> = pred.iter().map(|p| p.0).collect();
    let mut metrics = BTreeMap::new();
    metrics.insert("model".to_string(), score(&p, &y_test));
    metrics.extend(counts(&p, &s_test, &y_test));
    let recs: Vec<_> = test.iter().map(|&i| set.records.records[i].clone()).collect();
    metrics.extend(proxy_baselines(&recs, &y_test, &set.target).0);
    let s_train: Vec<&Sample> = f_train.iter().collect();
    let y_train: Vec<f64> = train.iter().map(|&i| truth[i]).collect();
    let extra = fitted_predictions(&s_train, &y_train, &s_test, trainer.cfg.seed);
    metrics.extend(score_each(&extra, &y_test));
    run.predictions(&recs.iter().collect::<Vec<_>>(), &y_test, &pred, &s_test, &extra)?;
    say_held_out(trainer, &metrics, test.len(), &set.family, predict_s);
    Ok(metrics)
}

/// Logs a single family's held-out summary: the model's and the counts' ranking, then the
/// fitted baselines' and the best published proxy's on the same split.
fn say_held_out(
    trainer: &mut Trainer,
    metrics: &BTreeMap<String, BTreeMap<String, f64>>,
    n: usize,
    family: &str,
    predict_s: f64,
) {
    let tau_of = |k: &str| metrics.get(k).and_then(|m| m.get("kendalltau")).copied();
    let fmt = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.4}"));
    trainer.say(format!(
        "held-out {} {}: spearman {:.4}, kendall tau {:.4} (#params {}, FLOPs {}); predicted in \
         {predict_s:.2} s",
        n,
        family,
        metrics["model"]["spearman"],
        metrics["model"]["kendalltau"],
        fmt(tau_of("params")),
        fmt(tau_of("flops")),
    ));
    let n_best = metrics.get("best_proxy").and_then(|m| m.get("n")).copied();
    trainer.say(format!(
        "same split, kendall tau: ridge on the training cells' graph features {}; ridge on log \
         #params + log FLOPs {}; random forest on GRAF features {}; best published proxy {}",
        fmt(tau_of("ridge")),
        fmt(tau_of("ridge_logs")),
        fmt(tau_of("forest_graf")),
        match (tau_of("best_proxy"), n_best) {
            (Some(t), Some(n)) => format!("{t:.4} (on the {n} cells it covers)"),
            _ => "-".into(),
        }
    ));
}

/// The training targets and the base line's slopes on log10 FLOPs, log10 parameters and log2
/// depth, when the config asks for the base line (`flops_transform`). One family: GENNAPE's
/// FLOPs slope alone. A mix: the slopes on log FLOPs and log depth fitted within its parts,
/// each part placed by its mean features (`mix`'s module docs); no parameters slope.
fn base_line(
    trainer: &mut Trainer,
    cfg: &TrainConfig,
    set: &LabelledSet,
    train: &[usize],
    graphs: &[&GraphFeatures],
    y: Vec<f64>,
) -> (Vec<f64>, [f64; 3]) {
    if let Some(groups) = &set.groups {
        let x: Vec<[f64; 2]> = graphs.iter().map(|g| mix::base_features(g)).collect();
        let of: Vec<u32> = train.iter().map(|&i| groups.of[i]).collect();
        let [flops, depth] = match cfg.supervised.flops_transform {
            true => mix::within_slopes(&x, &y, &of),
            false => [0.0; 2],
        };
        trainer.say(format!(
            "base line within the {} parts: {flops:.4} per decade of FLOPs, {depth:.4} per \
             doubling of depth",
            groups.names.len()
        ));
        return (mix::placed(&x, &y, &of, [flops, depth]), [flops, 0.0, depth]);
    }
    let lf: Vec<f64> = graphs.iter().map(|g| features::log_flops(g)).collect();
    let one_part = vec![0; lf.len()];
    let slope = if cfg.supervised.flops_transform { slope_within(&lf, &y, &one_part) } else { 0.0 };
    if slope != 0.0 {
        trainer.say(format!(
            "FLOPs transform: {} = a + {slope:.4} log10(1 + FLOPs) + residual",
            cfg.target
        ));
    }
    (y, [slope, 0.0, 0.0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Dataset, Record};

    #[test]
    fn members_share_the_test_cells_and_draw_their_own_training_cells() {
        let records: Vec<Record> =
            (0..200).map(|i| Record::new(format!("c{i}"), "nb101", format!("s{i}"))).collect();
        let ds = Dataset { family: "nb101".into(), records, issues: Vec::new() };
        let mut cfg = TrainConfig::default();
        cfg.supervised.n_test = 50;
        cfg.supervised.n_val = 20;
        cfg.supervised.n_train = 60;
        let ids = |r: &[usize]| r.iter().map(|&i| ds.records[i].id.clone()).collect::<Vec<_>>();
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
        let all: Vec<String> =
            ds.sample(200, cfg.seed).records.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids(&v0), all[50..70].to_vec());
        assert_eq!(ids(&tr0), all[70..130].to_vec());
    }
}
