//! The training loops (see the module docs of `train`).

use super::config::TrainConfig;
use super::data::Sample;
use super::model::Model;
use super::parts::{group_batches, mean_std, mean_tau_within, RowParts};
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
    crate::exec::no_grad(|| {
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
