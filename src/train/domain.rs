//! How models predict: one model's prediction in its parts (`Model::predict_parts`), the
//! members of an ensemble averaged, and each network's **in-domain score**, which pulls a
//! prediction toward the model's base line when the network is unlike anything the model
//! trained on.
//!
//! A model predicts `prior + dev`: `prior` is its base line (the training family's location
//! plus the FLOPs slope, GENNAPE's transform; a mix's slopes on log FLOPs and log depth,
//! fitted within its families), `dev` what the heads add from the graph. The base
//! line holds what is true of networks in general (more compute, more depth, more accuracy, at
//! these slopes); the heads hold what the model learnt of its family. Far from the family, the
//! heads extrapolate, and on real ImageNet architectures the bundled NB-101 model's heads rank
//! against accuracy. So:
//!
//! - each member measures how far a network's embedding is from its nearest fuzzy c-means
//!   centre, `d`, against `reference`, the 90th percentile of `d` over held-out networks of its
//!   training family (stored in the checkpoint, `Meta::domain_reference`); `min(1, reference
//!   / d)`, averaged over the members, is the score by distance: 1 for a network as close to
//!   the training networks as 90% of the family's own; 0.25 for one four times further;
//! - the ensemble's uncertainty `u` is read the same way against the 90th percentile of `u`
//!   over the same held-out networks (`Meta::spread_reference`): `min(1, reference / u)`.
//!   Embeddings of networks unlike the training ones can land near a centre (the torchvision
//!   classifiers, left out of a mix, score 0.84-0.88 by distance against 0.99 for NB-201
//!   cells) while the heads disagree on them (median uncertainty 0.36 against 0.10), so
//!   either view can say "out of domain";
//! - `in_domain` is the smaller of the two scores, and `prediction = mean(prior) + in_domain
//!   * mean(dev)`.
//!
//! A model without references (calibrated by no one) predicts `mean(prior + dev)`, as before,
//! with no score; one calibrated before the spread reference was stored reads the distance
//! alone. The uncertainty is the members' and heads' spread either way.

use super::model::Model;
use crate::encoder::Batch;
use crate::error::{Error, Result};
use crate::features::GraphFeatures;
use tch::{Device, Tensor};

impl Model {
    /// Predictions and uncertainties of `graphs` in the target's units (not shrunk toward
    /// the base: that is the ensemble's call, `train::domain`).
    pub fn predict(&self, graphs: &[&GraphFeatures]) -> Result<Vec<(f64, f64)>> {
        Ok(self.predict_parts(graphs)?.iter().map(|p| (p.prior + p.dev, p.spread)).collect())
    }

    /// Each graph's prediction in its parts, in the target's units.
    pub fn predict_parts(&self, graphs: &[&GraphFeatures]) -> Result<Vec<Parts>> {
        let _g = tch::no_grad_guard();
        let to_vec = |t: &Tensor| {
            Vec::<f32>::try_from(&t.to_device(Device::Cpu)).map_err(|e| Error::Model(e.to_string()))
        };
        let mut out = Vec::with_capacity(graphs.len());
        for chunk in graphs.chunks(256) {
            let masked: Vec<_> = chunk.iter().map(|g| self.mask_unseen(g)).collect();
            let refs: Vec<&GraphFeatures> = masked.iter().map(|g| g.as_ref()).collect();
            let b = Batch::new(&refs, &self.meta.dims, self.device())?;
            let z = self.encoder.forward(&b).0;
            let m = self.heads.forward(&z);
            let (mean, std) = (to_vec(&m.mean)?, to_vec(&m.std)?);
            let distance = match self.heads.nearest_centre_distance(&z) {
                Some(d) => to_vec(&d)?.into_iter().map(|d| Some(f64::from(d))).collect(),
                None => vec![None; chunk.len()],
            };
            let m = &self.meta;
            let (mu, sd, a, sign) = (m.target_mean, m.target_std, m.residual_weight, m.target_sign);
            for (i, g) in chunk.iter().enumerate() {
                out.push(Parts {
                    prior: sign * (mu + m.base(g)),
                    dev: sign * a * f64::from(mean[i]) * sd,
                    spread: f64::from(std[i]) * sd,
                    distance: distance[i],
                });
            }
        }
        Ok(out)
    }
}

/// One graph's prediction by one model, in the target's units: `prior + dev` is the
/// prediction. `prior` is the base line at the heads' mean (`sign * (location + base(g))`),
/// `dev` what the heads add to it, `spread` the heads' membership-weighted spread, and
/// `distance` the embedding's distance to its nearest fuzzy c-means centre (`None` without
/// centres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parts {
    pub prior: f64,
    pub dev: f64,
    pub spread: f64,
    pub distance: Option<f64>,
}

/// The percentile of held-out distances that counts as the edge of the domain.
pub const REFERENCE_QUANTILE: f64 = 0.9;

/// One graph's prediction by an ensemble.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predicted {
    /// In the target's units, shrunk toward the base line by `1 - in_domain`.
    pub value: f64,
    /// `sqrt(mean_k u_k^2 + mean_k (p_k - p)^2)` over the members' unshrunk predictions.
    pub uncertainty: f64,
    /// In `(0, 1]`; `None` when a member has no reference.
    pub in_domain: Option<f64>,
}

/// Predictions of a deep ensemble: models trained apart on the same family and target (other
/// seeds) predict each graph; see the module docs. One model gives exactly its own
/// predictions when it has no reference.
pub fn predict_ensemble(models: &[Model], graphs: &[&GraphFeatures]) -> Result<Vec<Predicted>> {
    check_members(models)?;
    let all: Vec<Vec<Parts>> =
        models.iter().map(|m| m.predict_parts(graphs)).collect::<Result<_>>()?;
    let spread: Option<f64> = models.iter().map(|m| m.meta.spread_reference).sum();
    let refs = References {
        distance: models.iter().map(|m| m.meta.domain_reference).collect(),
        spread: spread.map(|s| s / models.len() as f64),
    };
    Ok((0..graphs.len()).map(|i| combine(&all, i, &refs)).collect())
}

/// [`predict_ensemble`] as (prediction, uncertainty) pairs.
pub fn predict_members(models: &[Model], graphs: &[&GraphFeatures]) -> Result<Vec<(f64, f64)>> {
    Ok(predict_ensemble(models, graphs)?.into_iter().map(|p| (p.value, p.uncertainty)).collect())
}

/// An ensemble's in-domain references: each member's distance reference, and the ensemble's
/// spread reference (`None` where a member has none).
#[derive(Debug, Clone, Default, PartialEq)]
struct References {
    distance: Option<Vec<f64>>,
    spread: Option<f64>,
}

/// Graph `i` of every member's parts, combined.
fn combine(all: &[Vec<Parts>], i: usize, refs: &References) -> Predicted {
    let k = all.len() as f64;
    let mean = |f: &dyn Fn(&Parts) -> f64| all.iter().map(|p| f(&p[i])).sum::<f64>() / k;
    let full = mean(&|p| p.prior + p.dev);
    let within = mean(&|p| p.spread * p.spread);
    let between = mean(&|p| (p.prior + p.dev - full).powi(2));
    let uncertainty = if all.len() == 1 { all[0][i].spread } else { (within + between).sqrt() };
    let by_distance = refs.distance.as_ref().and_then(|r| {
        let scores: Option<Vec<f64>> =
            all.iter().zip(r).map(|(p, &r)| p[i].distance.map(|d| in_domain(d, r))).collect();
        scores.map(|s| s.iter().sum::<f64>() / k)
    });
    let by_spread = refs.spread.map(|r| in_domain(uncertainty, r));
    let in_domain = match (by_distance, by_spread) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let value = match in_domain {
        Some(w) => mean(&|p| p.prior) + w * mean(&|p| p.dev),
        None => full,
    };
    Predicted { value, uncertainty, in_domain }
}

/// `min(1, reference / distance)`: 1 inside the reference distance.
pub fn in_domain(distance: f64, reference: f64) -> f64 {
    if distance <= reference || distance.is_nan() || distance <= 0.0 {
        1.0
    } else {
        reference / distance
    }
}

/// Sets every member's [`Meta::domain_reference`](super::model::Meta) from held-out networks of
/// the training families (`graphs`, which it did not train on), and with `spread` (a mix) the
/// ensemble's `spread_reference`; returns the distance references. A member without fuzzy
/// c-means centres gets no distance reference; no graphs, no references at all.
///
/// Only a mix reads its spread: its held-out networks span several families, so its reference
/// covers how much the heads disagree on families they know. One family's members agree on it
/// more than on any other, cell spaces included (NB-101's model: NB-201 cells' median spread
/// 0.018 against NB-101's 90th percentile 0.0112), and its spread reference would mark every
/// other family out (NB-201 zero-shot 0.871 -> 0.774, docs/predictor.md).
pub fn calibrate(
    models: &mut [Model],
    graphs: &[&GraphFeatures],
    spread: bool,
) -> Result<Vec<Option<f64>>> {
    let all: Vec<Vec<Parts>> =
        models.iter().map(|m| m.predict_parts(graphs)).collect::<Result<_>>()?;
    let none = References::default();
    let mut u: Vec<f64> = (0..graphs.len()).map(|i| combine(&all, i, &none).uncertainty).collect();
    let spread = (spread && !u.is_empty()).then(|| quantile(&mut u, REFERENCE_QUANTILE));
    let mut out = Vec::with_capacity(models.len());
    for (m, parts) in models.iter_mut().zip(&all) {
        let mut d: Vec<f64> = parts.iter().filter_map(|p| p.distance).collect();
        let r = (!d.is_empty()).then(|| quantile(&mut d, REFERENCE_QUANTILE));
        m.meta.domain_reference = r;
        m.meta.spread_reference = spread;
        out.push(r);
    }
    Ok(out)
}

/// The `q` quantile of `v` (linear between order statistics); `v` non-empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Members must predict the same thing from the same inputs to be averaged.
fn check_members(models: &[Model]) -> Result<()> {
    let Some(first) = models.first() else {
        return Err(Error::Model("an ensemble needs at least one model".into()));
    };
    for m in &models[1..] {
        let (a, b) = (&first.meta, &m.meta);
        if (a.family.as_str(), a.target.as_str(), &a.config.proxies)
            != (b.family.as_str(), b.target.as_str(), &b.config.proxies)
        {
            return Err(Error::Model(format!(
                "models {} and {} predict different things ({} {} vs {} {}) or read other proxies: \
                 they cannot be averaged",
                a.name, b.name, a.family, a.target, b.family, b.target
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(prior: f64, dev: f64, distance: f64) -> Parts {
        Parts { prior, dev, spread: 0.01, distance: Some(distance) }
    }

    fn by_distance() -> References {
        References { distance: Some(vec![1.0, 1.0]), spread: None }
    }

    #[test]
    fn in_domain_is_one_inside_the_reference_and_falls_as_its_inverse_outside() {
        assert_eq!(in_domain(0.5, 1.0), 1.0);
        assert_eq!(in_domain(1.0, 1.0), 1.0);
        assert!((in_domain(4.0, 1.0) - 0.25).abs() < 1e-12);
        assert_eq!(in_domain(0.0, 1.0), 1.0);
        assert_eq!(in_domain(f64::NAN, 1.0), 1.0);
    }

    #[test]
    fn far_networks_move_to_the_prior_and_near_ones_keep_the_heads() {
        let near = vec![vec![parts(0.8, 0.05, 0.5)], vec![parts(0.8, 0.03, 0.5)]];
        let p = combine(&near, 0, &by_distance());
        assert!((p.value - 0.84).abs() < 1e-12 && p.in_domain == Some(1.0));
        let far = vec![vec![parts(0.8, 0.05, 2.0)], vec![parts(0.8, 0.03, 4.0)]];
        let p = combine(&far, 0, &by_distance());
        let w = (0.5 + 0.25) / 2.0;
        assert!((p.value - (0.8 + w * 0.04)).abs() < 1e-12);
        assert_eq!(p.in_domain, Some(w));
        // the uncertainty is the unshrunk members' spread, with or without a reference
        assert_eq!(p.uncertainty, combine(&far, 0, &References::default()).uncertainty);
        let plain = combine(&far, 0, &References::default());
        assert!((plain.value - 0.84).abs() < 1e-12 && plain.in_domain.is_none());
    }

    #[test]
    fn a_member_without_a_distance_gives_no_score() {
        let mixed = vec![
            vec![parts(0.8, 0.05, 2.0)],
            vec![Parts { distance: None, ..parts(0.8, 0.03, 0.0) }],
        ];
        assert_eq!(combine(&mixed, 0, &by_distance()).in_domain, None);
    }

    #[test]
    fn a_network_the_members_disagree_on_is_out_of_domain_however_near_its_embedding() {
        // near by distance, but the members disagree: uncertainty sqrt(0.01^2 + 0.1^2)
        let split = vec![vec![parts(0.8, 0.1, 0.5)], vec![parts(0.8, -0.1, 0.5)]];
        let u = (0.01f64.powi(2) + 0.1f64.powi(2)).sqrt();
        let refs = References { spread: Some(u / 4.0), ..by_distance() };
        let p = combine(&split, 0, &refs);
        assert!((p.in_domain.unwrap() - 0.25).abs() < 1e-12 && (p.uncertainty - u).abs() < 1e-12);
        // far by distance and agreed on: the distance decides; the smaller score wins
        let far = vec![vec![parts(0.8, 0.05, 2.0)], vec![parts(0.8, 0.05, 2.0)]];
        assert_eq!(combine(&far, 0, &refs).in_domain, Some(0.5));
        // the spread reference alone still scores (a member without centres)
        let alone = References { distance: None, spread: Some(u / 2.0) };
        assert!((combine(&split, 0, &alone).in_domain.unwrap() - 0.5).abs() < 1e-12);
        let shrunk = combine(&split, 0, &alone);
        assert!((shrunk.value - 0.8).abs() < 1e-12, "the members' mean dev is 0 here");
    }

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(quantile(&mut v, 0.5), 3.0);
        assert!((quantile(&mut v, 0.9) - 4.6).abs() < 1e-12);
        assert_eq!(quantile(&mut [7.0], 0.9), 7.0);
    }
}
