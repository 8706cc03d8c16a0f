//! Membership-weighted MLP heads (tch): the stage after the encoder. K small MLPs each map a
//! graph embedding to a (standardised) accuracy; fuzzy c-means memberships of the embedding
//! (centres fitted on the training embeddings, see `fcm`) mix them: `prediction = sum_k u_k
//! head_k`, and the membership-weighted spread `sqrt(sum_k u_k (head_k - prediction)^2)` is the
//! uncertainty. Before centres are fitted every head weighs `1/K`. The losses live here too:
//! MSE on the standardised target, a pairwise logistic ranking loss over every ordered pair of
//! the batch, and a per-head term that makes each head fit the graphs of its own cluster.

pub use super::HeadsConfig;
use crate::error::{Error, Result};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

/// Output of the ensemble for a batch.
#[derive(Debug)]
pub struct Mixed {
    /// Mixed prediction, `[B]`.
    pub mean: Tensor,
    /// Membership-weighted spread across heads, `[B]`.
    pub std: Tensor,
    /// Every head's output, `[B, K]`.
    pub outputs: Tensor,
    /// Memberships, `[B, K]` (rows sum to 1).
    pub u: Tensor,
}

/// K MLP heads and the fuzzy-cluster centres that mix them.
#[derive(Debug)]
pub struct Heads {
    cfg: HeadsConfig,
    heads: Vec<(nn::Linear, nn::Linear)>,
    centres: Option<Tensor>,
}

/// Fuzzy c-means memberships of rows `z` (`[B, D]`) to `centres` (`[K, D]`) with fuzzifier
/// `m`: `u_ik = d_ik^(-2/(m-1)) / sum_j d_ij^(-2/(m-1))`, computed in log space.
pub fn fcm_memberships(z: &Tensor, centres: &Tensor, m: f64) -> Tensor {
    let d2 = sq_distances(z, centres);
    // d^(-2/(m-1)) = exp(-(1/(m-1)) * ln d^2)
    (d2.clamp_min(1e-12).log() * (-1.0 / (m - 1.0))).softmax(1, Kind::Float)
}

/// Squared Euclidean distances `[B, K]` of rows `z` (`[B, D]`) to `centres` (`[K, D]`).
fn sq_distances(z: &Tensor, centres: &Tensor) -> Tensor {
    (z.unsqueeze(1) - centres.unsqueeze(0)).square().sum_dim_intlist(
        [2i64].as_slice(),
        false,
        Kind::Float,
    )
}

/// Mixes head outputs `[B, K]` by memberships `[B, K]`: (mean `[B]`, spread `[B]`).
pub fn mix(outputs: &Tensor, u: &Tensor) -> (Tensor, Tensor) {
    let mean = (outputs * u).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let var = ((outputs - mean.unsqueeze(1)).square() * u).sum_dim_intlist(
        [1i64].as_slice(),
        false,
        Kind::Float,
    );
    (mean, var.clamp_min(0.0).sqrt())
}

impl Heads {
    /// Creates `cfg.k` heads reading embeddings of width `emb_dim`, under `p`.
    pub fn new(p: &nn::Path, emb_dim: i64, cfg: &HeadsConfig) -> Heads {
        let heads = (0..cfg.k.max(1))
            .map(|k| {
                let q = p / format!("head{k}");
                (
                    nn::linear(&q / "l1", emb_dim, cfg.hidden, Default::default()),
                    nn::linear(&q / "l2", cfg.hidden, 1, Default::default()),
                )
            })
            .collect();
        Heads { cfg: cfg.clone(), heads, centres: None }
    }

    /// The configuration.
    pub fn config(&self) -> &HeadsConfig {
        &self.cfg
    }

    /// Number of heads.
    pub fn k(&self) -> usize {
        self.heads.len()
    }

    /// Sets the fuzzifier the memberships use (from the fit, when the config left it open).
    pub fn set_m(&mut self, m: f64) -> Result<()> {
        if !(m.is_finite() && m > 1.0) {
            return Err(Error::Model(format!("fuzzifier m must be above 1, got {m}")));
        }
        self.cfg.m = Some(m);
        Ok(())
    }

    /// Sets the fuzzy-cluster centres (`K` rows of the embedding width).
    pub fn set_centres(&mut self, centres: &[Vec<f64>], device: tch::Device) -> Result<()> {
        let k = self.k();
        if centres.len() != k {
            return Err(Error::Model(format!("{} FCM centres for {k} heads", centres.len())));
        }
        let d = centres.first().map(Vec::len).unwrap_or(0);
        if d == 0 || centres.iter().any(|c| c.len() != d || c.iter().any(|v| !v.is_finite())) {
            return Err(Error::Model("FCM centres are ragged, empty or not finite".into()));
        }
        let flat: Vec<f32> = centres.iter().flatten().map(|&v| v as f32).collect();
        self.centres = Some(Tensor::from_slice(&flat).view([k as i64, d as i64]).to_device(device));
        Ok(())
    }

    /// The centres, when fitted.
    pub fn centres(&self) -> Option<Vec<Vec<f64>>> {
        let c = self.centres.as_ref()?;
        let k = c.size()[0];
        Some(
            (0..k)
                .map(|i| Vec::<f32>::try_from(&c.get(i)).unwrap_or_default())
                .map(|r| r.into_iter().map(f64::from).collect())
                .collect(),
        )
    }

    /// Euclidean distance of each embedding of `z` (`[B, D]`) to its nearest centre, `[B]`;
    /// `None` before centres are fitted.
    pub fn nearest_centre_distance(&self, z: &Tensor) -> Option<Tensor> {
        let c = self.centres.as_ref()?;
        Some(sq_distances(z, c).min_dim(1, false).0.sqrt())
    }

    /// Memberships of embeddings `z`: FCM when centres are set, otherwise uniform.
    pub fn memberships(&self, z: &Tensor) -> Tensor {
        match &self.centres {
            Some(c) => fcm_memberships(&z.detach(), c, self.cfg.m.unwrap_or(2.0)),
            None => {
                let b = z.size()[0];
                Tensor::full([b, self.k() as i64], 1.0 / self.k() as f64, (Kind::Float, z.device()))
            }
        }
    }

    /// Every head's output `[B, K]`.
    pub fn outputs(&self, z: &Tensor) -> Tensor {
        let cols: Vec<Tensor> =
            self.heads.iter().map(|(l1, l2)| l2.forward(&l1.forward(z).relu())).collect();
        Tensor::cat(&cols, 1)
    }

    /// Mixed prediction and spread for embeddings `z`.
    pub fn forward(&self, z: &Tensor) -> Mixed {
        let outputs = self.outputs(z);
        let u = self.memberships(z);
        let (mean, std) = mix(&outputs, &u);
        Mixed { mean, std, outputs, u }
    }
}

/// Pairwise logistic ranking loss: the mean of `softplus(-(p_i - p_j))` over the pairs of the
/// batch with `y_i > y_j` (0 when there are none).
pub fn rank_loss(pred: &Tensor, y: &Tensor) -> Tensor {
    let dp = pred.unsqueeze(1) - pred.unsqueeze(0);
    let dy = y.unsqueeze(1) - y.unsqueeze(0);
    let mask = dy.gt(1e-6).to_kind(Kind::Float);
    let n = mask.sum(Kind::Float).clamp_min(1.0);
    ((-dp).softplus() * mask).sum(Kind::Float) / n
}

/// The training loss of a batch with standardised targets `y`: MSE of the mixed prediction +
/// `rank_weight` * ranking loss + `head_weight` * membership-weighted MSE of every head.
pub fn loss(mixed: &Mixed, y: &Tensor, rank_weight: f64, head_weight: f64) -> Tensor {
    let mse = mixed.mean.mse_loss(y, Reduction::Mean);
    let per_head = ((&mixed.outputs - y.unsqueeze(1)).square() * &mixed.u)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .mean(Kind::Float);
    mse + rank_loss(&mixed.mean, y) * rank_weight + per_head * head_weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn mixed_output_equals_weighted_heads() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut heads = Heads::new(&vs.root(), 4, &HeadsConfig { k: 3, hidden: 8, m: Some(2.0) });
        heads
            .set_centres(&[vec![0.0; 4], vec![1.0; 4], vec![-1.0, 2.0, 0.0, 0.5]], Device::Cpu)
            .unwrap();
        let z = Tensor::from_slice(&[0.1f32, 0.2, -0.3, 0.9, 1.5, 0.7, 0.2, -0.4]).view([2, 4]);
        let m = heads.forward(&z);
        let out = Vec::<f32>::try_from(&m.outputs.view([-1])).unwrap();
        let u = Vec::<f32>::try_from(&m.u.view([-1])).unwrap();
        let mean = Vec::<f32>::try_from(&m.mean).unwrap();
        let std = Vec::<f32>::try_from(&m.std).unwrap();
        for b in 0..2 {
            let us = &u[b * 3..b * 3 + 3];
            let os = &out[b * 3..b * 3 + 3];
            assert!((us.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let want: f32 = us.iter().zip(os).map(|(u, o)| u * o).sum();
            assert!((mean[b] - want).abs() < 1e-5, "{} vs {want}", mean[b]);
            let var: f32 = us.iter().zip(os).map(|(u, o)| u * (o - want).powi(2)).sum();
            assert!((std[b] - var.sqrt()).abs() < 1e-5);
        }
    }

    #[test]
    fn memberships_match_the_fcm_formula() {
        let z = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]);
        let c = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0]).view([2, 2]);
        // d = 1 and 2, m = 2: u ~ 1/d^2 -> 1 : 1/4 -> 0.8, 0.2
        let u = Vec::<f32>::try_from(&fcm_memberships(&z, &c, 2.0).view([-1])).unwrap();
        assert!((u[0] - 0.8).abs() < 1e-5 && (u[1] - 0.2).abs() < 1e-5, "{u:?}");
    }

    #[test]
    fn uniform_without_centres_and_checked_centres() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut heads = Heads::new(&vs.root(), 2, &HeadsConfig { k: 2, hidden: 4, m: Some(2.0) });
        let u = heads.memberships(&Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)));
        assert_eq!(Vec::<f32>::try_from(&u.view([-1])).unwrap(), vec![0.5; 6]);
        assert!(heads.set_centres(&[vec![0.0, 1.0]], Device::Cpu).is_err());
        assert!(heads.set_centres(&[vec![0.0, 1.0], vec![f64::NAN, 0.0]], Device::Cpu).is_err());
    }

    #[test]
    fn ranking_loss_is_lower_for_the_right_order() {
        let y = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let good = rank_loss(&Tensor::from_slice(&[0.0f32, 1.0, 2.0]), &y).double_value(&[]);
        let bad = rank_loss(&Tensor::from_slice(&[2.0f32, 1.0, 0.0]), &y).double_value(&[]);
        assert!(good < bad);
        let flat = rank_loss(&Tensor::from_slice(&[0.0f32; 3]), &Tensor::from_slice(&[1.0f32; 3]));
        assert_eq!(flat.double_value(&[]), 0.0);
    }
}
