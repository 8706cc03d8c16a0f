//! A model's `meta.json`: everything about a trained predictor besides its weights (op
//! vocabulary, feature dimensions, target standardisation and base line, FCM centres, training
//! family, metrics, config, nape version, in-domain references).

use super::config::TrainConfig;
use crate::dataset::cache::NAPE_VERSION;
use crate::encoder::FeatureDims;
use crate::features::{GraphFeatures, FEATURE_KINDS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the checkpoint layout.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Weights file inside a model folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Metadata file inside a model folder.
pub const META_FILE: &str = "meta.json";

/// Everything about a model besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`CHECKPOINT_VERSION`].
    pub checkpoint_version: u32,
    /// nape version that wrote it.
    pub nape_version: String,
    /// Model name.
    pub name: String,
    /// Family whose labels it was (last) trained on.
    pub family: String,
    /// Target it predicts.
    pub target: String,
    /// What it predicts, in words.
    pub predicts: String,
    /// Location of the heads' target (the target less the FLOPs term) over the training labels:
    /// its mean after pretraining, its median after fine-tuning (predictions are
    /// de-standardised with it).
    pub target_mean: f64,
    /// Scale of the heads' target over the training labels: its standard deviation after
    /// pretraining, its normal-consistent MAD after fine-tuning (see `train::flows::finetune`).
    pub target_std: f64,
    /// GENNAPE's FLOPs transform of the target: the heads predict the standardised
    /// `target - flops_slope * log10(1 + FLOPs)` (FLOPs of the canonical graph), and the term
    /// is added back to every prediction. The slope is fitted by least squares on the
    /// training labels; 0 = no transform (checkpoints written before it).
    #[serde(default)]
    pub flops_slope: f64,
    /// Standard deviation of the raw target over the training labels (before the FLOPs
    /// transform).
    #[serde(default)]
    pub target_spread: f64,
    /// Normal-consistent median absolute deviation of the raw target over the training labels
    /// (`parts::median_mad`): the spread of their bulk. Fine-tuning rescales the FLOPs slope
    /// by the new family's MAD over this one. `None` in checkpoints written before it:
    /// fine-tuning then recomputes it from the training family's labelled cells in
    /// `seen_ids`.
    #[serde(default)]
    pub target_mad: Option<f64>,
    /// The second term of the base line, on log10(1 + parameters) of the canonical graph
    /// (0 unless a fine-tune fitted the base by least squares on both; see `train::adapt`).
    #[serde(default)]
    pub params_slope: f64,
    /// The third term of the base line, on log2(1 + depth) of the canonical graph (a mix's
    /// base line on the universal features, `train::flows::mix::within_slopes`; 0 otherwise
    /// and in checkpoints written before it).
    #[serde(default)]
    pub depth_slope: f64,
    /// +1 when higher targets are better, -1 for a target where lower is better (an error, a
    /// loss): the model is trained on `target_sign * target` and predicts in the target's own
    /// units.
    #[serde(default = "one")]
    pub target_sign: f64,
    /// Weight of the heads' residual in a prediction (`train::adapt` chooses it by
    /// cross-validation on the fine-tuning rows; 1 after pretraining).
    #[serde(default = "one")]
    pub residual_weight: f64,
    /// Feature dimensions the weights expect.
    pub dims: FeatureDims,
    /// Op vocabulary, index 0 = out of vocabulary.
    pub op_vocabulary: Vec<String>,
    /// Feature normalisation, as the features module documents it.
    pub feature_normalisation: String,
    /// Fuzzy c-means centres of the training embeddings (none: uniform memberships).
    pub fcm_centres: Option<Vec<Vec<f64>>>,
    /// The whole training configuration.
    pub config: TrainConfig,
    /// Held-out metrics and timings measured when it was trained.
    pub metrics: BTreeMap<String, f64>,
    /// Which member of a deep ensemble it is (0 for a single model): its initialisation is
    /// drawn from `member_seed(config.seed, member)`.
    #[serde(default)]
    pub member: usize,
    /// Ids of the labelled records it was trained or validated on (so evaluation on the same
    /// family can leave them out).
    pub seen_ids: Vec<String>,
    /// Op vocabulary indices present in its training graphs. Ops outside this set never
    /// trained their embedding or their op-histogram weights, so prediction reads them as
    /// out of vocabulary (index 0, histogram share 0). Empty: no masking.
    #[serde(default)]
    pub seen_ops: Vec<i64>,
    /// Per-column mean and std of the numeric node and graph-level features over its training
    /// graphs (for aligning another family's features to them, see `train::align`).
    #[serde(default)]
    pub feature_stats: Option<super::align::FeatureStats>,
    /// How far from its training networks a network may be and still count as in domain: the
    /// 90th percentile, over held-out networks of the training family, of an embedding's
    /// distance to its nearest fuzzy c-means centre (`train::domain`). `None` (a model not
    /// calibrated): no in-domain score, and predictions are not shrunk.
    #[serde(default)]
    pub domain_reference: Option<f64>,
    /// How uncertain the ensemble may be about a network that still counts as in domain: the
    /// 90th percentile, over the same held-out networks, of the ensemble's uncertainty (the
    /// same value in every member; `train::domain`). `None` (not calibrated, or calibrated
    /// before it was stored): the in-domain score reads the distance alone.
    #[serde(default)]
    pub spread_reference: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl Meta {
    /// The base line of a graph: `flops_slope * log10(1 + FLOPs) + params_slope *
    /// log10(1 + params) + depth_slope * log2(1 + depth)`, in the (signed) target's units; the
    /// heads predict what it leaves.
    pub fn base(&self, g: &GraphFeatures) -> f64 {
        self.flops_slope * crate::features::log_flops(g)
            + self.params_slope * crate::features::graf::log10_params(g)
            + self.depth_slope * crate::features::log_depth(g)
    }

    /// Metadata for a new model trained with `config`.
    pub fn new(name: &str, config: &TrainConfig) -> Meta {
        let mut vocab = vec!["<oov>".to_string()];
        vocab.extend(FEATURE_KINDS.iter().map(|k| k.as_str().to_string()));
        Meta {
            checkpoint_version: CHECKPOINT_VERSION,
            nape_version: NAPE_VERSION.to_string(),
            name: name.to_string(),
            family: config.family.clone(),
            target: config.target.clone(),
            predicts: super::data::describe_target(&config.family, &config.target),
            target_mean: 0.0,
            target_std: 1.0,
            flops_slope: 0.0,
            target_spread: 0.0,
            target_mad: None,
            params_slope: 0.0,
            depth_slope: 0.0,
            target_sign: 1.0,
            residual_weight: 1.0,
            dims: FeatureDims::current(),
            op_vocabulary: vocab,
            feature_normalisation: "see nape::features: log-scaled counts and sizes, proxies as \
                                    stored by nape::proxies, presence flags"
                .into(),
            fcm_centres: None,
            config: config.clone(),
            metrics: BTreeMap::new(),
            member: 0,
            seen_ids: Vec::new(),
            seen_ops: Vec::new(),
            feature_stats: None,
            domain_reference: None,
            spread_reference: None,
        }
    }
}
