//! The training loops (see the module docs of `train`).

use super::config::TrainConfig;
use super::data::Sample;
use super::model::Model;
use crate::dataset::SplitMix64;
use crate::encoder::augment::augment;
use crate::encoder::gnn::nt_xent;
use crate::encoder::Batch;
use crate::ensemble::heads;
use crate::error::{Error, Result};
use crate::features::GraphFeatures;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// Runs the phases of training with one configuration and seed; collects a log.
#[derive(Debug)]
pub struct Trainer {
    /// The configuration.
    pub cfg: TrainConfig,
    /// Log lines (also echoed to stderr unless quiet).
    pub log: Vec<String>,
    /// No echo on stderr.
    pub quiet: bool,
}

fn tch_err(e: tch::TchError) -> Error {
    Error::Model(format!("torch: {e}"))
}

fn bar(n: usize, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches {elapsed}<{eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

fn shuffled(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut idx);
    idx
}

pub(crate) fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

pub(crate) fn restore(vs: &nn::VarStore, snap: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (k, mut v) in vs.variables() {
            if let Some(s) = snap.get(&k) {
                v.copy_(s);
            }
        }
    });
}

/// One optimiser step of the heads' loss on the training rows `chunk`; the loss's value.
fn step(
    model: &Model,
    opt: &mut nn::Optimizer,
    train: &[(&GraphFeatures, f64)],
    chunk: &[usize],
    s: &super::config::SupervisedConfig,
) -> Result<f64> {
    let device = model.device();
    let graphs: Vec<&GraphFeatures> = chunk.iter().map(|&i| train[i].0).collect();
    let b = Batch::new(&graphs, &model.meta.dims, device)?;
    let y = f32s(chunk.iter().map(|&i| train[i].1), device);
    let mixed = model.heads.forward(&model.encoder.forward(&b).0);
    let loss = heads::loss(&mixed, &y, s.rank_weight, s.head_weight);
    opt.backward_step(&loss);
    Ok(loss.double_value(&[]))
}

fn f32s(v: impl Iterator<Item = f64>, device: Device) -> Tensor {
    let v: Vec<f32> = v.map(|x| x as f32).collect();
    Tensor::from_slice(&v).to_device(device)
}

/// The rows of each part, in order: `parts_of(of)[g]` lists the `i` with `of[i] == g`.
pub fn parts_of(of: &[u32]) -> Vec<Vec<usize>> {
    let k = of.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
    let mut parts = vec![Vec::new(); k];
    for (i, &g) in of.iter().enumerate() {
        parts[g as usize].push(i);
    }
    parts
}

/// Each part's mean x and mean y (parts are indexed by `of`).
pub fn part_means(x: &[f64], y: &[f64], of: &[u32]) -> (Vec<f64>, Vec<f64>) {
    let k = of.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
    let (mut sx, mut sy, mut n) = (vec![0.0f64; k], vec![0.0f64; k], vec![0.0f64; k]);
    for ((xi, yi), &g) in x.iter().zip(y).zip(of) {
        sx[g as usize] += xi;
        sy[g as usize] += yi;
        n[g as usize] += 1.0;
    }
    let mean = |s: Vec<f64>| s.iter().zip(&n).map(|(s, c)| s / c.max(1.0)).collect();
    (mean(sx), mean(sy))
}

/// The least-squares slope of `y` on `x` within parts (`of`): on each row's deviations from
/// its part's means, a fixed effect per part (one part: the plain OLS slope). 0 when `x`
/// does not vary within any part.
pub fn slope_within(x: &[f64], y: &[f64], of: &[u32]) -> f64 {
    let (mx, my) = part_means(x, y, of);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for ((xi, yi), &g) in x.iter().zip(y).zip(of) {
        let d = xi - mx[g as usize];
        sxy += d * (yi - my[g as usize]);
        sxx += d * d;
    }
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

/// A mix's rows as [`Trainer::supervised`] reads them: each training and validation row's
/// part, and each part's family. The parts of one family are its targets on the same
/// networks, so a family weighs as one source, however many targets it brings.
#[derive(Debug, Clone, Copy)]
pub struct RowParts<'a> {
    pub train: &'a [u32],
    pub val: &'a [u32],
    pub family: &'a [u32],
}

/// One epoch's optimiser steps over `chunks` (batches of row indices of `train`), with a
/// progress bar named `label`; the mean training loss.
fn train_epoch(
    model: &Model,
    opt: &mut nn::Optimizer,
    train: &[(&GraphFeatures, f64)],
    chunks: &[Vec<usize>],
    s: &super::config::SupervisedConfig,
    label: String,
) -> Result<f64> {
    let pb = bar(chunks.len(), label);
    let mut sum = 0.0;
    for chunk in chunks {
        sum += step(model, opt, train, chunk, s)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(sum / chunks.len().max(1) as f64)
}

/// One epoch's batches of row indices: a fresh shuffle cut into batches of `batch` (a last
/// batch of one row dropped), or with `groups` batches each from one part ([`group_batches`]).
/// The shuffle is drawn either way, so `rng` moves as it always has.
fn epoch_batches(
    n: usize,
    groups: Option<RowParts>,
    batch: usize,
    temperature: f64,
    rng: &mut SplitMix64,
) -> Vec<Vec<usize>> {
    let order = shuffled(n, rng);
    match groups {
        Some(g) => group_batches(g.train, g.family, batch, temperature, rng),
        None => order.chunks(batch).filter(|c| c.len() >= 2).map(<[usize]>::to_vec).collect(),
    }
}

/// The model's Kendall tau on `val`, or with `groups` the parts' weighted mean
/// ([`mean_tau_within`]).
fn validation_tau(
    model: &Model,
    val: &[(&GraphFeatures, f64)],
    groups: Option<RowParts>,
) -> Result<f64> {
    let g: Vec<&GraphFeatures> = val.iter().map(|v| v.0).collect();
    let pred: Vec<f64> = model.predict(&g)?.into_iter().map(|p| p.0).collect();
    let truth: Vec<f64> = val.iter().map(|v| v.1).collect();
    Ok(match groups {
        Some(g) => mean_tau_within(&pred, &truth, g.val, g.family),
        None => crate::metrics::kendall_tau(&pred, &truth),
    })
}

/// Each part's share of its family: 1 / (the family's parts with rows), 0 for a part
/// without rows (`family[g]`: part `g`'s family; a part beyond it is a family of its own).
pub fn family_shares(parts: &[Vec<usize>], family: &[u32]) -> Vec<f64> {
    let fam = |g: usize| family.get(g).map_or(u64::MAX - g as u64, |&f| u64::from(f));
    (0..parts.len())
        .map(|g| {
            let k = (0..parts.len()).filter(|&h| !parts[h].is_empty() && fam(h) == fam(g)).count();
            if parts[g].is_empty() {
                0.0
            } else {
                1.0 / k as f64
            }
        })
        .collect()
}

/// One epoch's batches of a mix's training rows (`of`: each row's part; `family`: each
/// part's family), each from one part. Family `f` of `n_f` networks gets a share
/// `n_f^temperature / sum n^temperature` of the epoch's `ceil(n / batch)` batches, divided
/// evenly among its parts (at least one batch a part), as multilingual translation models
/// share theirs among languages: NB-201's three targets on the same cells are one source, not
/// three. A part's batches are `min(batch, n_g)` rows drawn without replacement from its rows
/// in a fresh order each time they run out; the batches then come in a random order. Parts of
/// fewer than 2 rows give none.
pub fn group_batches(
    of: &[u32],
    family: &[u32],
    batch: usize,
    temperature: f64,
    rng: &mut SplitMix64,
) -> Vec<Vec<usize>> {
    let mut parts = parts_of(of);
    for p in parts.iter_mut().filter(|p| p.len() < 2) {
        p.clear();
    }
    let share = family_shares(&parts, family);
    let total = of.len().div_ceil(batch.max(2)) as f64;
    let weight: Vec<f64> =
        parts.iter().zip(&share).map(|(p, s)| s * (p.len() as f64).powf(temperature)).collect();
    let sum: f64 = weight.iter().sum();
    let mut out = Vec::new();
    for (rows, w) in parts.iter_mut().zip(&weight).filter(|(p, _)| !p.is_empty()) {
        let size = batch.max(2).min(rows.len());
        let mut pos = rows.len();
        for _ in 0..((total * w / sum).round() as usize).max(1) {
            if pos + size > rows.len() {
                rng.shuffle(rows);
                pos = 0;
            }
            out.push(rows[pos..pos + size].to_vec());
            pos += size;
        }
    }
    rng.shuffle(&mut out);
    out
}

/// The mean over parts (`of`; `family`: each part's family) of Kendall's tau within each
/// part of at least 3 rows, each weighted by its rows: tau's sampling variance goes as 1/n,
/// so this is the inverse-variance estimate of one tau, and a part of 8 validation networks
/// cannot outvote one of 500 (with equal weights it decided early stopping on its own noise).
/// A family's parts share its weight, as they share its networks ([`group_batches`]).
pub fn mean_tau_within(pred: &[f64], truth: &[f64], of: &[u32], family: &[u32]) -> f64 {
    let (mut sum, mut weight) = (0.0, 0.0);
    let parts = parts_of(of);
    for (idx, share) in parts.iter().zip(family_shares(&parts, family)) {
        let p: Vec<f64> = idx.iter().map(|&i| pred[i]).collect();
        let t: Vec<f64> = idx.iter().map(|&i| truth[i]).collect();
        let tau = crate::metrics::kendall_tau(&p, &t);
        if idx.len() >= 3 && tau.is_finite() {
            sum += tau * idx.len() as f64 * share;
            weight += idx.len() as f64 * share;
        }
    }
    if weight > 0.0 {
        sum / weight
    } else {
        f64::NAN
    }
}

/// Mean and (population) standard deviation, the latter floored at 1e-8.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-8))
}

/// Median and normal-consistent median absolute deviation (`1.4826 * median |x - median|`,
/// which equals the standard deviation for normal data) of the finite values of `v`: the
/// location and scale of the bulk of a heavy-tailed sample, which one outlier cannot move.
/// Falls back to the standard deviation when more than half the values tie; (0, 1e-8) when
/// nothing is finite.
pub fn median_mad(v: &[f64]) -> (f64, f64) {
    fn median(s: &mut [f64]) -> f64 {
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }
    let mut f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (0.0, 1e-8);
    }
    let med = median(&mut f);
    let mut dev: Vec<f64> = f.iter().map(|x| (x - med).abs()).collect();
    let mad = 1.4826 * median(&mut dev);
    if mad > 1e-12 {
        (med, mad)
    } else {
        (med, mean_std(&f).1)
    }
}

impl Trainer {
    /// A trainer for `cfg` (checked).
    pub fn new(cfg: TrainConfig) -> Result<Trainer> {
        cfg.check()?;
        if cfg.threads > 0 {
            tch::set_num_threads(cfg.threads as i32);
        }
        Ok(Trainer { cfg, log: Vec::new(), quiet: false })
    }

    /// Logs a line.
    pub fn say(&mut self, line: String) {
        if !self.quiet {
            eprintln!("{line}");
        }
        self.log.push(line);
    }

    /// Contrastive (NT-Xent over two augmented views) + auxiliary (log params, log FLOPs from
    /// the GNN readout) pretraining on `graphs`.
    pub fn pretrain(&mut self, model: &Model, graphs: &[&Sample]) -> Result<()> {
        let p = self.cfg.pretrain.clone();
        if graphs.len() < 2 || p.epochs == 0 {
            self.say("pretraining skipped (no epochs or fewer than 2 graphs)".into());
            return Ok(());
        }
        let aux: Vec<[f64; 2]> = graphs.iter().map(|s| s.aux()).collect();
        let stats: Vec<(f64, f64)> =
            (0..2).map(|c| mean_std(&aux.iter().map(|a| a[c]).collect::<Vec<_>>())).collect();
        let aux_z: Vec<[f64; 2]> =
            aux.iter().map(|a| std::array::from_fn(|c| (a[c] - stats[c].0) / stats[c].1)).collect();
        let mut opt = nn::Adam::default().build(&model.vs, p.lr).map_err(tch_err)?;
        let mut rng = SplitMix64(self.cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
        for epoch in 0..p.epochs {
            let t0 = Instant::now();
            let order = shuffled(graphs.len(), &mut rng);
            let chunks: Vec<&[usize]> = order.chunks(p.batch).filter(|c| c.len() >= 2).collect();
            let pb = bar(chunks.len(), format!("pretrain {}/{}", epoch + 1, p.epochs));
            let (mut sum_c, mut sum_a, mut n) = (0.0, 0.0, 0usize);
            for chunk in chunks {
                let (lc, la) =
                    self.contrastive_step(model, &mut opt, graphs, &aux_z, chunk, &mut rng)?;
                sum_c += lc;
                sum_a += la;
                n += 1;
                pb.inc(1);
            }
            pb.finish_and_clear();
            let n = n.max(1) as f64;
            self.say(format!(
                "pretrain epoch {}: nt-xent {:.4}, aux mse {:.4} ({:.1} s)",
                epoch + 1,
                sum_c / n,
                sum_a / n,
                t0.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    /// One contrastive step on the rows `chunk` of `graphs`: two augmented views, NT-Xent
    /// between their projections and the auxiliary regression of `aux_z` (standardised log
    /// params and log FLOPs) from both readouts. Returns the two losses.
    fn contrastive_step(
        &self,
        model: &Model,
        opt: &mut nn::Optimizer,
        graphs: &[&Sample],
        aux_z: &[[f64; 2]],
        chunk: &[usize],
        rng: &mut SplitMix64,
    ) -> Result<(f64, f64)> {
        let (p, device) = (&self.cfg.pretrain, model.device());
        let v1: Vec<GraphFeatures> =
            chunk.iter().map(|&i| augment(&graphs[i].features, &self.cfg.augment, rng)).collect();
        let v2: Vec<GraphFeatures> =
            chunk.iter().map(|&i| augment(&graphs[i].features, &self.cfg.augment, rng)).collect();
        let b1 = Batch::new(&v1.iter().collect::<Vec<_>>(), &model.meta.dims, device)?;
        let b2 = Batch::new(&v2.iter().collect::<Vec<_>>(), &model.meta.dims, device)?;
        let columns: Vec<Tensor> =
            (0..2).map(|c| f32s(chunk.iter().map(|&i| aux_z[i][c]), device)).collect();
        let target = Tensor::stack(&columns, 1);
        let (z1, r1) = model.encoder.forward(&b1);
        let (z2, r2) = model.encoder.forward(&b2);
        let lc = nt_xent(&model.encoder.project(&z1), &model.encoder.project(&z2), p.temperature);
        let la = (model.encoder.aux(&r1).mse_loss(&target, Reduction::Mean)
            + model.encoder.aux(&r2).mse_loss(&target, Reduction::Mean))
            * 0.5;
        let loss = &lc * p.contrastive_weight + &la * p.aux_weight;
        opt.backward_step(&loss);
        Ok((lc.double_value(&[]), la.double_value(&[])))
    }

    /// Supervised training on `train` (graphs with targets already standardised), early
    /// stopping on validation Kendall tau; the best epoch's weights are kept. Returns the best
    /// validation tau. With `groups` (each training and validation row's part of a mix),
    /// every batch comes from one part ([`group_batches`]) and the validation tau is the
    /// parts' weighted mean ([`mean_tau_within`]).
    #[allow(clippy::too_many_arguments)]
    pub fn supervised(
        &mut self,
        model: &Model,
        train: &[(&GraphFeatures, f64)],
        val: &[(&GraphFeatures, f64)],
        groups: Option<RowParts>,
        epochs: usize,
        lr: f64,
        phase: &str,
    ) -> Result<f64> {
        let s = self.cfg.supervised.clone();
        if train.is_empty() || epochs == 0 {
            return Ok(f64::NAN);
        }
        let mut opt = nn::Adam::default().build(&model.vs, lr).map_err(tch_err)?;
        let mut rng = SplitMix64(self.cfg.seed ^ 0x5151_2024 ^ phase.len() as u64);
        let (mut best, mut best_state, mut stale) = (f64::NEG_INFINITY, None, 0usize);
        for epoch in 0..epochs {
            let t0 = Instant::now();
            let chunks =
                epoch_batches(train.len(), groups, s.batch, self.cfg.mix.temperature, &mut rng);
            let label = format!("{phase} {}/{epochs}", epoch + 1);
            let loss = train_epoch(model, &mut opt, train, &chunks, &s, label)?;
            let tau = match val.is_empty() {
                true => -loss,
                false => validation_tau(model, val, groups)?,
            };
            // without validation cells the epoch kept is the one of lowest training loss
            let judged = if val.is_empty() {
                "no validation cells".to_string()
            } else {
                format!("validation kendall tau {tau:.4}")
            };
            self.say(format!(
                "{phase} epoch {}: loss {loss:.4}, {judged} ({:.1} s)",
                epoch + 1,
                t0.elapsed().as_secs_f64()
            ));
            if tau > best {
                best = tau;
                best_state = Some(snapshot(&model.vs));
                stale = 0;
            } else {
                stale += 1;
                if stale >= s.patience.max(1) && !val.is_empty() {
                    self.say(format!("{phase}: early stop after epoch {}", epoch + 1));
                    break;
                }
            }
        }
        if let Some(state) = best_state {
            restore(&model.vs, &state);
        }
        Ok(best)
    }

    /// Fine-tuning epochs on `train` (network, standardised target), with `after(epoch, model)`
    /// called after each epoch on the weights as they are then (no early stopping, nothing
    /// restored: the caller chose the epochs, see `train::adapt`). `heads_only` trains the
    /// heads and leaves the encoder as it is. Batches are the config's; the batch order is
    /// drawn from the seed.
    pub fn fit_epochs(
        &mut self,
        model: &Model,
        train: &[(&GraphFeatures, f64)],
        epochs: usize,
        lr: f64,
        heads_only: bool,
        after: &mut dyn FnMut(usize, &Model) -> Result<()>,
    ) -> Result<()> {
        let s = self.cfg.supervised.clone();
        let frozen: Vec<Tensor> = if heads_only {
            model
                .vs
                .variables()
                .into_iter()
                .filter(|(k, _)| k.starts_with("encoder"))
                .map(|(_, v)| v)
                .collect()
        } else {
            Vec::new()
        };
        for v in &frozen {
            let _ = v.shallow_clone().set_requires_grad(false);
        }
        let mut opt = nn::Adam::default().build(&model.vs, lr).map_err(tch_err)?;
        let mut rng = SplitMix64(self.cfg.seed ^ 0x5151_2024);
        let mut result = Ok(());
        for epoch in 0..epochs {
            let order = shuffled(train.len(), &mut rng);
            for chunk in order.chunks(s.batch.max(2)).filter(|c| c.len() >= 2) {
                step(model, &mut opt, train, chunk, &s)?;
            }
            result = after(epoch + 1, model);
            if result.is_err() {
                break;
            }
        }
        for v in &frozen {
            let _ = v.shallow_clone().set_requires_grad(true);
        }
        result
    }

    /// Fits fuzzy c-means on the embeddings of `graphs` and sets the heads' centres.
    pub fn fit_fcm(&mut self, model: &mut Model, graphs: &[&GraphFeatures]) -> Result<()> {
        let k = model.heads.k();
        if k < 2 || graphs.len() < k {
            return Ok(());
        }
        let z = model.embed(graphs, 512)?.to_device(Device::Cpu).to_kind(Kind::Double);
        let (n, d) = (z.size()[0] as usize, z.size()[1] as usize);
        let flat = Vec::<f64>::try_from(&z.view([-1])).map_err(tch_err)?;
        let data = ndarray::Array2::from_shape_vec((n, d), flat)
            .map_err(|e| Error::Model(format!("embeddings: {e}")))?;
        let m = model.heads.config().m.unwrap_or_else(|| crate::ensemble::fcm::fuzzifier_for(n, d));
        model.heads.set_m(m)?;
        model.meta.config.heads.m = Some(m);
        let centres = crate::ensemble::fcm::FuzzyCMeansParams {
            k,
            m,
            max_iter: self.cfg.fcm_max_iter,
            tol: self.cfg.fcm_tol,
            seed: self.cfg.seed,
        }
        .check()?
        .fit(&data)?
        .centres()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect::<Vec<_>>();
        model.heads.set_centres(&centres, model.device())?;
        let u = model.heads.memberships(&model.embed(graphs, 512)?);
        let share: Vec<f64> = Vec::<f32>::try_from(
            &u.mean_dim([0i64].as_slice(), false, Kind::Float).to_device(Device::Cpu),
        )
        .map_err(tch_err)?
        .into_iter()
        .map(f64::from)
        .collect();
        self.say(format!("fuzzy c-means: {k} clusters, m = {m:.3}, mean memberships {share:.3?}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_mad_ignores_outliers_that_move_the_std() {
        let bulk: Vec<f64> = (0..49).map(|i| 90.0 + (i as f64 - 24.0) * 0.1).collect();
        let (m0, s0) = median_mad(&bulk);
        let mut tailed = bulk.clone();
        tailed.push(10.0);
        let (m1, s1) = median_mad(&tailed);
        assert!((m0 - 90.0).abs() < 1e-9 && (m1 - m0).abs() < 0.06, "{m0} {m1}");
        assert!((s1 / s0 - 1.0).abs() < 0.05, "MAD moved: {s0} -> {s1}");
        // the std of the same sample grows sevenfold
        assert!(mean_std(&tailed).1 > 7.0 * mean_std(&bulk).1);
        // normal-consistent: a large normal-ish sample has MAD ~ std
        let mut rng = SplitMix64(7);
        let z: Vec<f64> = (0..20000)
            .map(|_| {
                (0..12).map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64).sum::<f64>() - 6.0
            })
            .collect();
        let (_, s) = median_mad(&z);
        assert!((s / mean_std(&z).1 - 1.0).abs() < 0.03, "{s}");
        // ties: falls back to the std; NaN ignored; empty is finite
        let (m, s) = median_mad(&[1.0, 1.0, 1.0, 5.0, f64::NAN]);
        assert_eq!(m, 1.0);
        assert!((s - mean_std(&[1.0, 1.0, 1.0, 5.0]).1).abs() < 1e-12);
        assert!(median_mad(&[]).1 > 0.0);
    }

    #[test]
    fn group_batches_are_pure_and_share_the_epoch_by_size_to_the_temperature() {
        // parts of 900, 100 and 1 rows; batch 50 -> 21 batches in the epoch
        let of: Vec<u32> = (0..1001)
            .map(|i| {
                if i < 900 {
                    0
                } else if i < 1000 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let count = |t: f64| {
            let b = group_batches(&of, &[0, 1, 2], 50, t, &mut SplitMix64(3));
            let mut n = [0usize; 3];
            for batch in &b {
                let g = of[batch[0]];
                assert!(batch.iter().all(|&i| of[i] == g), "a batch mixes parts");
                let mut u = batch.clone();
                u.sort();
                u.dedup();
                assert_eq!(u.len(), batch.len(), "a row twice in one batch");
                n[g as usize] += 1;
            }
            n
        };
        assert_eq!(count(1.0), [19, 2, 0]);
        assert_eq!(count(0.5), [16, 5, 0]);
        assert_eq!(count(0.0), [11, 11, 0]);
        // a part smaller than a batch comes whole
        let b = group_batches(&[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], &[0, 1], 8, 1.0, &mut SplitMix64(1));
        assert!(b.iter().all(|x| x.len() == if of_len(x) { 3 } else { 7 }));
        fn of_len(x: &[usize]) -> bool {
            x[0] < 3
        }
    }

    #[test]
    fn a_family_s_targets_share_its_batches() {
        // family 0: two targets on the same 400 networks; family 1: one target on 400
        let of: Vec<u32> = (0..1200).map(|i| (i / 400) as u32).collect();
        let b = group_batches(&of, &[0, 0, 1], 50, 0.5, &mut SplitMix64(5));
        let mut n = [0usize; 3];
        for batch in &b {
            n[of[batch[0]] as usize] += 1;
        }
        // 24 batches: half to each family, family 0's half split between its targets
        assert_eq!(n, [6, 6, 12]);
        // each part its own family: a third each
        let b = group_batches(&of, &[0, 1, 2], 50, 0.5, &mut SplitMix64(5));
        assert!(b.len() == 24 && b.iter().filter(|x| of[x[0]] == 2).count() == 8);
        assert_eq!(family_shares(&parts_of(&of), &[0, 0, 1]), vec![0.5, 0.5, 1.0]);
    }

    #[test]
    fn the_validation_tau_of_a_mix_is_the_parts_mean() {
        // within each part the prediction ranks perfectly; across parts it runs backwards
        let pred = [1.0, 2.0, 3.0, 11.0, 12.0, 13.0];
        let truth = [10.0, 20.0, 30.0, 1.0, 2.0, 3.0];
        assert!((mean_tau_within(&pred, &truth, &[0, 0, 0, 1, 1, 1], &[0, 1]) - 1.0).abs() < 1e-12);
        assert!(crate::metrics::kendall_tau(&pred, &truth) < 0.0);
        assert!(mean_tau_within(&pred, &truth, &[0, 0, 1, 1, 2, 2], &[0, 1, 2]).is_nan());
        // weighted by rows: 3 rows ranked right, 5 ranked backwards -> (3 - 5) / 8
        let pred = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let truth = [1.0, 2.0, 3.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        let tau = mean_tau_within(&pred, &truth, &[0, 0, 0, 1, 1, 1, 1, 1], &[0, 1]);
        assert!((tau + 0.25).abs() < 1e-12, "{tau}");
        // parts 0 and 1 of one family, part 2 of another: the family's two taus weigh as one
        let pred = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let truth = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0];
        let tau = mean_tau_within(&pred, &truth, &[0, 0, 0, 1, 1, 1, 2, 2, 2], &[0, 0, 1]);
        assert!(tau.abs() < 1e-12, "{tau}");
    }
}
