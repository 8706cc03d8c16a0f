//! Every hyper-parameter and seed of a training run, as one serde document (JSON), recorded in
//! the run folder and in the checkpoint's `meta.json`.

use crate::encoder::augment::AugmentConfig;
use crate::encoder::EncoderConfig;
use crate::ensemble::HeadsConfig;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Contrastive + auxiliary pretraining on unlabelled cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PretrainConfig {
    /// Unlabelled NB-101 cells drawn from the whole space (0 skips pretraining).
    pub unlabelled: usize,
    /// Epochs over them.
    pub epochs: usize,
    /// Graphs per batch (each gives two views).
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// NT-Xent temperature.
    pub temperature: f64,
    /// Weight of the auxiliary regression of log params / log FLOPs.
    pub aux_weight: f64,
    /// Weight of the contrastive loss (0 leaves only the auxiliary regression).
    pub contrastive_weight: f64,
}

impl Default for PretrainConfig {
    fn default() -> PretrainConfig {
        PretrainConfig {
            unlabelled: 20_000,
            epochs: 3,
            batch: 256,
            lr: 1e-3,
            temperature: 0.2,
            aux_weight: 1.0,
            contrastive_weight: 1.0,
        }
    }
}

/// Supervised training on labelled cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisedConfig {
    /// Labelled cells held out for testing (never trained on; drawn first).
    pub n_test: usize,
    /// Validation cells for early stopping (drawn next).
    pub n_val: usize,
    /// Training cells (drawn next; 0 = all the rest).
    pub n_train: usize,
    /// Most epochs.
    pub epochs: usize,
    /// Graphs per batch.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Weight of the pairwise ranking loss.
    pub rank_weight: f64,
    /// Weight of the membership-weighted per-head MSE.
    pub head_weight: f64,
    /// Epochs without a better validation Kendall tau before stopping.
    pub patience: usize,
    /// Epochs after fitting fuzzy c-means on the embeddings (0 keeps uniform memberships).
    pub fcm_epochs: usize,
    /// GENNAPE's FLOPs transform: fit `target = a + b log10(1 + FLOPs)` on the training labels
    /// and train the heads on what it leaves (`train::model::Meta::flops_slope`). A mix fits
    /// its base line on log FLOPs, log parameters and log depth within its parts instead
    /// (`train::flows::mix::within_slopes`).
    pub flops_transform: bool,
}

impl Default for SupervisedConfig {
    fn default() -> SupervisedConfig {
        SupervisedConfig {
            n_test: 5_000,
            n_val: 1_000,
            n_train: 10_000,
            epochs: 15,
            batch: 128,
            lr: 1e-3,
            rank_weight: 1.0,
            head_weight: 0.5,
            patience: 4,
            fcm_epochs: 4,
            flops_transform: false,
        }
    }
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Seed of every random choice (splits, sampling, initialisation, augmentation, batches).
    pub seed: u64,
    /// The labelled family trained on.
    pub family: String,
    /// Its target.
    pub target: String,
    /// Encoder shape.
    pub encoder: EncoderConfig,
    /// Ensemble shape.
    pub heads: HeadsConfig,
    /// Augmentations of the contrastive views.
    pub augment: AugmentConfig,
    /// Pretraining.
    pub pretrain: PretrainConfig,
    /// Supervised training.
    pub supervised: SupervisedConfig,
    /// Fuzzy c-means iterations and tolerance.
    pub fcm_max_iter: usize,
    /// Fuzzy c-means tolerance.
    pub fcm_tol: f64,
    /// Torch intra-op threads (0 = torch's default).
    pub threads: usize,
    /// Zero-cost proxies read as graph-level features, by name (a subset of
    /// [`crate::features::GLOBAL_PROXIES`]; empty: none). They are computed for every network
    /// the model trains on or predicts, on Fashion-MNIST batches drawn with seed 0.
    pub proxies: Vec<String>,
    /// Models of the deep ensemble: each trains on the same split and unlabelled cells from
    /// its own initialisation, batches and augmentations ([`member_seed`]); the prediction is
    /// their mean and their spread joins the uncertainty (`train::model::predict_members`).
    pub members: usize,
    /// Training on several labelled families at once (`train::flows::mix`); empty parts: one
    /// family (`family`, `target`).
    pub mix: MixConfig,
}

/// Several labelled families in one training run: each part's target standardised within the
/// part, batches drawn from one part at a time (`train::flows::mix`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MixConfig {
    /// The parts: `FAMILY[:TARGET]` (`nb201:cifar100_test_ep200`) or `LABELS_FILE[:TARGET]`.
    pub parts: Vec<String>,
    /// Most labelled networks drawn from one part (the same networks for every part of a
    /// family: its targets share their held-out networks).
    pub per_part: usize,
    /// A part's share of the training batches goes as its size to this power (1: as its size,
    /// 0: every part alike; 0.5, the default, as multilingual translation models draw their
    /// languages).
    pub temperature: f64,
    /// Fraction of each part held out for testing.
    pub held_out: f64,
    /// Fraction of each part for validation (early stopping on the parts' mean Kendall tau).
    pub validation: f64,
}

impl Default for MixConfig {
    fn default() -> MixConfig {
        MixConfig {
            parts: Vec::new(),
            per_part: 3000,
            temperature: 0.5,
            held_out: 0.1,
            validation: 0.1,
        }
    }
}

/// The seed of member `k`'s initialisation, batches and augmentations, for a run of `seed`
/// (member 0 uses `seed` itself, so a one-member run is the run it always was).
pub fn member_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_add((k as u64).wrapping_mul(1_000_003))
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            seed: 0,
            family: "nb101".into(),
            target: "val_acc_ep108".into(),
            encoder: EncoderConfig::default(),
            heads: HeadsConfig::default(),
            augment: AugmentConfig::default(),
            pretrain: PretrainConfig::default(),
            supervised: SupervisedConfig::default(),
            fcm_max_iter: 200,
            fcm_tol: 1e-5,
            threads: 0,
            proxies: Vec::new(),
            members: 1,
            mix: MixConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a JSON config; missing fields take their defaults.
    pub fn read(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::BadData {
            path: path.to_path_buf(),
            line: e.line(),
            msg: format!("not a training config: {e}"),
        })
    }

    /// Checks values that would make training meaningless.
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Usage(format!("training config: {m}")));
        if self.supervised.batch < 2 || self.pretrain.batch < 2 {
            return bad("batches need at least 2 graphs");
        }
        if self.heads.k == 0 || self.heads.m.is_some_and(|m| !(m > 1.0 && m.is_finite())) {
            return bad("heads.k must be >= 1 and heads.m > 1");
        }
        if self.members == 0 || self.members > 64 {
            return bad("members must be between 1 and 64");
        }
        if self.encoder.hidden < 1 || self.encoder.emb_dim < 1 {
            return bad("encoder widths must be positive");
        }
        if self.pretrain.temperature.is_nan() || self.pretrain.temperature <= 0.0 {
            return bad("pretrain.temperature must be positive");
        }
        let m = &self.mix;
        let fractions = m.held_out >= 0.0 && m.validation >= 0.0 && m.held_out + m.validation < 0.9;
        if !((0.0..=1.0).contains(&m.temperature) && fractions) {
            return bad("mix.temperature must be in [0, 1], held_out + validation below 0.9");
        }
        let known = crate::features::GLOBAL_PROXIES;
        if let Some(p) = self.proxies.iter().find(|p| !known.contains(&p.as_str())) {
            return bad(&format!("unknown proxy '{p}' (known: {})", known.join(", ")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_takes_defaults_and_round_trips() {
        let c: TrainConfig =
            serde_json::from_str(r#"{"seed": 7, "supervised": {"n_train": 300}}"#).unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.supervised.n_train, 300);
        assert_eq!(c.supervised.n_test, SupervisedConfig::default().n_test);
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(c.check().is_ok());
        let mut bad = c;
        bad.heads.m = Some(1.0);
        assert!(bad.check().is_err());
    }
}
