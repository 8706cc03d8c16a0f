//! Few-shot adaptation: a pretrained model (or each member of a deep ensemble) adapted to a
//! new family from a handful of labelled networks, in any units, with its epochs and the
//! weight of its learned residual chosen by cross-validation on those rows alone.
//!
//! A prediction is `sign * (base(g) + location + w * scale * heads(g))`:
//! - `sign` is -1 for a target where lower is better (an error, a loss), so the model always
//!   learns "higher is better";
//! - the **base** line is either the pretrained FLOPs slope rescaled by the new rows' robust
//!   spread over the training one (GENNAPE's FLOPs transform carried over) or a small ridge on
//!   log10 FLOPs and log10 params fitted on the rows ([`Base`]);
//! - `location` and `scale` are the median and normal-consistent MAD of what the base leaves
//!   (robust to the few networks that do not train, which set the std anywhere on NB-201);
//! - the heads are fine-tuned on that standardised residual for `epochs` epochs, and `w`
//!   ([`super::model::Meta::residual_weight`]) weighs what they add.
//!
//! `epochs` and `w` come from k-fold cross-validation on the labelled rows: fold `f` is held
//! out from member `f mod members`, recalibrated and trained on the other folds, and its
//! predictions at each checkpoint epoch are pooled over the folds; the (epochs, w) of the
//! highest pooled Spearman wins (ties: fewer epochs, larger w). Every member is then
//! recalibrated on all rows and trained that many epochs. No evaluation row is ever read.

use super::model::Model;
use super::parts::{mean_std, median_mad};
use super::trainer::{restore, snapshot, Trainer};
use crate::dataset::SplitMix64;
use crate::error::{Error, Result};
use crate::features::{graf::log10_params, log_flops, GraphFeatures};
use serde::{Deserialize, Serialize};

/// How the base line is set on the new rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The pretrained slopes (FLOPs, and params for a mix model), rescaled by the rows' MAD
    /// over the training MAD.
    Flops,
    /// A ridge line on log10 FLOPs and log10 params fitted on the rows.
    Ridge,
}

/// Settings of [`adapt`].
#[derive(Debug, Clone, Serialize)]
pub struct AdaptConfig {
    /// The most fine-tuning epochs tried (and trained, without cross-validation).
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Cross-validation folds (below 2: no cross-validation, `epochs` epochs and weight 1).
    pub folds: usize,
    /// Train the heads only, keeping the pretrained encoder.
    pub heads_only: bool,
    /// The base line.
    pub base: Base,
    /// Lower targets are better.
    pub lower_is_better: bool,
    /// Seed of the folds and of the batch orders.
    pub seed: u64,
}

/// What [`adapt`] chose.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdaptChoice {
    /// Epochs trained.
    pub epochs: usize,
    /// Weight of the heads' residual.
    pub residual_weight: f64,
    /// Pooled out-of-fold Spearman of the choice (NaN without cross-validation).
    pub cv_spearman: f64,
    /// Out-of-fold mean absolute error of the choice, in the target's units.
    pub cv_mae: f64,
    /// Every (epochs, weight, pooled Spearman) tried.
    pub tried: Vec<(usize, f64, f64)>,
}

/// The residual weights cross-validation chooses from.
const WEIGHTS: [f64; 4] = [1.0, 0.5, 0.25, 0.0];

/// The epochs at which cross-validation scores the held-out fold, up to `max`.
fn checkpoints(max: usize) -> Vec<usize> {
    let mut c: Vec<usize> =
        [0, 5, 10, 20, 30, 40, 60, 80, 120, 160].into_iter().filter(|&e| e < max).collect();
    c.push(max);
    c
}

/// Sets the model's sign, base line, location and scale on `rows` (network, raw target);
/// `train_mad` is the robust spread of the target it was pretrained on (0: unknown).
pub fn recalibrate(
    model: &mut Model,
    rows: &[(&GraphFeatures, f64)],
    train_mad: f64,
    cfg: &AdaptConfig,
) {
    let sign = if cfg.lower_is_better { -1.0 } else { 1.0 };
    let y: Vec<f64> = rows.iter().map(|r| sign * r.1).collect();
    let m = &mut model.meta;
    let (_, spread) = median_mad(&y);
    match cfg.base {
        Base::Flops => {
            // the slopes live in "higher is better" units of the target, whatever its sign;
            // they move with the target's spread (a mix model has a depth slope too)
            let scale = if train_mad > 0.0 { spread / train_mad } else { 1.0 };
            m.flops_slope *= scale;
            m.params_slope *= scale;
            m.depth_slope *= scale;
        }
        Base::Ridge => {
            let x: Vec<[f64; 2]> =
                rows.iter().map(|r| [log_flops(r.0), log10_params(r.0)]).collect();
            let [a, b] = ridge2(&x, &y);
            m.flops_slope = a;
            m.params_slope = b;
            m.depth_slope = 0.0;
        }
    }
    m.target_sign = sign;
    m.target_mad = Some(spread);
    m.target_spread = mean_std(&y).1;
    let resid: Vec<f64> = rows.iter().zip(&y).map(|(r, y)| y - m.base(r.0)).collect();
    let (mu, sd) = median_mad(&resid);
    m.target_mean = mu;
    m.target_std = sd;
    m.residual_weight = 1.0;
    let mut seen: std::collections::BTreeSet<i64> = m.seen_ops.iter().copied().collect();
    seen.extend(rows.iter().flat_map(|r| r.0.op.iter().copied()));
    m.seen_ops = seen.into_iter().collect();
}

/// Slopes of a ridge line of `y` on two centred columns (penalty 1e-2 of each column's sum
/// of squares: enough to split collinear log FLOPs and log params, too little to matter
/// otherwise).
fn ridge2(x: &[[f64; 2]], y: &[f64]) -> [f64; 2] {
    let n = x.len().max(1) as f64;
    let mx = [0, 1].map(|c| x.iter().map(|r| r[c]).sum::<f64>() / n);
    let my = y.iter().sum::<f64>() / n;
    let (mut s, mut t) = ([[0.0; 2]; 2], [0.0; 2]);
    for (r, &yy) in x.iter().zip(y) {
        let d = [r[0] - mx[0], r[1] - mx[1]];
        for i in 0..2 {
            t[i] += d[i] * (yy - my);
            for j in 0..2 {
                s[i][j] += d[i] * d[j];
            }
        }
    }
    for (i, row) in s.iter_mut().enumerate() {
        row[i] += 1e-2 * row[i] + 1e-12;
    }
    let det = s[0][0] * s[1][1] - s[0][1] * s[1][0];
    if det.abs() < 1e-18 {
        return [0.0, 0.0];
    }
    [(t[0] * s[1][1] - t[1] * s[0][1]) / det, (s[0][0] * t[1] - s[1][0] * t[0]) / det]
}

/// Trains one member on `rows` (already recalibrated) for `epochs`, calling `at` at each of
/// `marks` (0 = before any training).
fn train_marked(
    trainer: &mut Trainer,
    model: &Model,
    rows: &[(&GraphFeatures, f64)],
    cfg: &AdaptConfig,
    marks: &[usize],
    at: &mut dyn FnMut(usize, &Model) -> Result<()>,
) -> Result<()> {
    let train: Vec<(&GraphFeatures, f64)> =
        rows.iter().map(|&(g, y)| (g, model.standardise(g, y))).collect();
    if marks.contains(&0) {
        at(0, model)?;
    }
    let last = marks.iter().copied().max().unwrap_or(0);
    trainer.cfg.supervised.batch = rows.len().max(2);
    trainer.fit_epochs(model, &train, last, cfg.lr, cfg.heads_only, &mut |e, m| {
        if marks.contains(&e) {
            at(e, m)?;
        }
        Ok(())
    })
}

/// Adapts `members` to `rows` (network, raw target): recalibration, cross-validated epochs
/// and residual weight, then every member trained on all rows (see the module docs).
/// `train_mads[k]` is member k's pretraining target MAD.
pub fn adapt(
    members: &mut [Model],
    rows: &[(&GraphFeatures, f64)],
    train_mads: &[f64],
    cfg: &AdaptConfig,
    trainer: &mut Trainer,
) -> Result<AdaptChoice> {
    if members.is_empty() || rows.len() < 2 {
        return Err(Error::Model(format!(
            "fine-tuning needs a model and 2 rows, not {}",
            rows.len()
        )));
    }
    let mut choice = if cfg.folds >= 2 && rows.len() >= 4 {
        cross_validate(members, rows, train_mads, cfg, trainer)?
    } else {
        AdaptChoice {
            epochs: cfg.epochs,
            residual_weight: 1.0,
            cv_spearman: f64::NAN,
            cv_mae: f64::NAN,
            tried: vec![],
        }
    };
    let n = members.len();
    for (k, model) in members.iter_mut().enumerate() {
        recalibrate(model, rows, train_mads.get(k).copied().unwrap_or(0.0), cfg);
        trainer.cfg.seed = super::config::member_seed(cfg.seed, k);
        train_marked(trainer, model, rows, cfg, &[choice.epochs], &mut |_, _| Ok(()))?;
        model.meta.residual_weight = choice.residual_weight;
        if n > 1 {
            trainer.say(format!("member {k}: {} epochs on {} rows", choice.epochs, rows.len()));
        }
    }
    choice.tried.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    Ok(choice)
}

/// Each of `n` rows' fold of `folds`, dealt in a seeded order.
fn folds_of(n: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64(seed ^ 0xC0_F01D).shuffle(&mut order);
    let mut f = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        f[i] = pos % folds;
    }
    f
}

/// The (epochs, residual weight) whose out-of-fold predictions (`oof[mark][row]`: the fixed
/// part and the heads' residual) rank `truth` best, every pair tried recorded.
fn best_choice(oof: &[Vec<(f64, f64)>], marks: &[usize], truth: &[f64]) -> AdaptChoice {
    let mut best = AdaptChoice { cv_spearman: f64::NEG_INFINITY, ..Default::default() };
    for (slot, &e) in marks.iter().enumerate() {
        for w in WEIGHTS {
            let p: Vec<f64> = oof[slot].iter().map(|(a, r)| a + w * r).collect();
            let rho = crate::metrics::spearman(&p, truth);
            let rho = if rho.is_finite() { rho } else { -1.0 };
            best.tried.push((e, w, rho));
            if rho > best.cv_spearman + 1e-9 {
                best.epochs = e;
                best.residual_weight = w;
                best.cv_spearman = rho;
                best.cv_mae = crate::metrics::mae(&p, truth);
            }
        }
    }
    best
}

/// The (epochs, residual weight) of the best pooled out-of-fold Spearman.
fn cross_validate(
    members: &mut [Model],
    rows: &[(&GraphFeatures, f64)],
    train_mads: &[f64],
    cfg: &AdaptConfig,
    trainer: &mut Trainer,
) -> Result<AdaptChoice> {
    let folds = cfg.folds.min(rows.len());
    let fold_of = folds_of(rows.len(), folds, cfg.seed);
    let marks = checkpoints(cfg.epochs);
    // per mark: each row's out-of-fold (location + base, heads' residual), in signed units
    let mut oof = vec![vec![(f64::NAN, f64::NAN); rows.len()]; marks.len()];
    for f in 0..folds {
        let k = f % members.len();
        let model = &mut members[k];
        let (state, meta) = (snapshot(&model.vs), model.meta.clone());
        let inside: Vec<(&GraphFeatures, f64)> =
            rows.iter().zip(&fold_of).filter(|(_, &g)| g != f).map(|(r, _)| *r).collect();
        let held: Vec<usize> = (0..rows.len()).filter(|&i| fold_of[i] == f).collect();
        recalibrate(model, &inside, train_mads.get(k).copied().unwrap_or(0.0), cfg);
        trainer.cfg.seed = super::config::member_seed(cfg.seed ^ 0xF01D, f);
        let graphs: Vec<&GraphFeatures> = held.iter().map(|&i| rows[i].0).collect();
        train_marked(trainer, model, &inside, cfg, &marks, &mut |e, m| {
            let p = m.predict(&graphs)?;
            let slot = marks.iter().position(|&x| x == e).unwrap_or(0);
            let mm = &m.meta;
            for (&i, (p, _)) in held.iter().zip(p) {
                let fixed = mm.target_mean + mm.base(rows[i].0);
                oof[slot][i] = (fixed, mm.target_sign * p - fixed);
            }
            Ok(())
        })?;
        restore(&model.vs, &state);
        model.meta = meta;
    }
    let sign = if cfg.lower_is_better { -1.0 } else { 1.0 };
    let truth: Vec<f64> = rows.iter().map(|r| sign * r.1).collect();
    let best = best_choice(&oof, &marks, &truth);
    trainer.say(format!(
        "cross-validation ({folds} folds of {} rows): {} epochs, residual weight {}, out-of-fold \
         spearman {:.4}, MAE {:.4}",
        rows.len(),
        best.epochs,
        best.residual_weight,
        best.cv_spearman,
        best.cv_mae
    ));
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge2_recovers_two_slopes_and_survives_collinear_columns() {
        let x: Vec<[f64; 2]> = (0..40).map(|i| [f64::from(i) * 0.1, f64::from(i % 7)]).collect();
        let y: Vec<f64> = x.iter().map(|r| 3.0 + 2.0 * r[0] - 0.5 * r[1]).collect();
        let [a, b] = ridge2(&x, &y);
        assert!((a - 2.0).abs() < 0.05 && (b + 0.5).abs() < 0.05, "{a} {b}");
        let x: Vec<[f64; 2]> = (0..10).map(|i| [f64::from(i), f64::from(i)]).collect();
        let y: Vec<f64> = (0..10).map(f64::from).collect();
        let [a, b] = ridge2(&x, &y);
        assert!(a.is_finite() && b.is_finite() && (a + b - 1.0).abs() < 0.05, "{a} {b}");
        assert_eq!(ridge2(&[[1.0, 1.0]; 3], &[1.0, 2.0, 3.0]), [0.0, 0.0]);
    }

    #[test]
    fn checkpoints_end_at_the_most_epochs() {
        assert_eq!(checkpoints(60), [0, 5, 10, 20, 30, 40, 60]);
        assert_eq!(checkpoints(0), [0]);
        assert_eq!(checkpoints(7), [0, 5, 7]);
    }
}
