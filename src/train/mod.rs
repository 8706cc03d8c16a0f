//! Training: the stage after the encoder and ensemble. A [`Trainer`] runs, with one seed for
//! every random choice, (1) contrastive pretraining (NT-Xent over two augmented views) plus an
//! auxiliary regression of free statistics on unlabelled NB-101 cells, (2) supervised training
//! on labelled cells (MSE on the standardised target + pairwise ranking) with early stopping on
//! a validation split, (3) fuzzy c-means on the training embeddings and more epochs with the
//! heads mixed by memberships. [`flows`] wires these into `pretrain`, `eval` and `finetune`
//! with run folders `runs/<id>/{config.json, log.txt, metrics.json, predictions.csv}` and
//! checkpoints `models/<name>/{weights.safetensors, meta.json}` ([`model`]). Progress bars
//! (indicatif, per epoch) go to stderr.

#[cfg(feature = "torch")]
pub mod adapt;
pub mod align;
pub mod config;
pub mod data;
#[cfg(feature = "torch")]
pub mod domain;
#[cfg(feature = "torch")]
pub mod flows;
#[cfg(feature = "torch")]
pub mod meta;
#[cfg(feature = "torch")]
pub mod model;
pub mod parts;

pub use config::TrainConfig;
pub use data::Sample;

use crate::metrics;
use std::collections::BTreeMap;

/// The metrics nape reports for predictions `pred` of true values `truth` (NASLib's names).
pub fn score(pred: &[f64], truth: &[f64]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("spearman".into(), metrics::spearman(pred, truth));
    m.insert("kendalltau".into(), metrics::kendall_tau(pred, truth));
    m.insert("kt_2dec".into(), metrics::kendall_rounded(pred, truth, 2));
    m.insert("pearson".into(), metrics::pearson(pred, truth));
    m.insert("mae".into(), metrics::mae(pred, truth));
    m.insert("rmse".into(), metrics::rmse(pred, truth));
    m.insert("precision_10".into(), metrics::precision_at_k(pred, truth, 10));
    m.insert("precision_20".into(), metrics::precision_at_k(pred, truth, 20));
    m.insert("ndcg_10".into(), metrics::ndcg_at_k(pred, truth, 10));
    m.insert("ndcg_50".into(), metrics::ndcg_at_k(pred, truth, 50));
    m.insert("n".into(), pred.len() as f64);
    m
}

/// The rank metrics of a baseline score (its units are not the target's, so no MAE/RMSE).
pub fn score_ranking(pred: &[f64], truth: &[f64]) -> BTreeMap<String, f64> {
    let mut m = score_unitless(pred, truth);
    m.remove("pearson");
    m
}

/// The metrics of predictions made in another unit than the truth (a model trained on one
/// target, evaluated zero-shot on another, e.g. NB-101's fraction against NB-201's percent on
/// another dataset): everything but MAE and RMSE, which would compare different quantities.
pub fn score_unitless(pred: &[f64], truth: &[f64]) -> BTreeMap<String, f64> {
    let mut m = score(pred, truth);
    for k in ["mae", "rmse"] {
        m.remove(k);
    }
    m
}

#[cfg(feature = "torch")]
pub use trainer::Trainer;

#[cfg(feature = "torch")]
mod trainer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_has_every_metric() {
        let p = [1.0, 2.0, 3.0, 4.0];
        let t = [10.0, 20.0, 30.0, 40.0];
        let m = score(&p, &t);
        for k in [
            "spearman",
            "kendalltau",
            "kt_2dec",
            "pearson",
            "mae",
            "rmse",
            "precision_10",
            "precision_20",
            "ndcg_10",
            "ndcg_50",
        ] {
            assert!(m.contains_key(k), "{k}");
        }
        assert!((m["spearman"] - 1.0).abs() < 1e-12);
        assert!(!score_ranking(&p, &t).contains_key("mae"));
        assert!(!score_ranking(&p, &t).contains_key("pearson"));
        let u = score_unitless(&p, &t);
        assert!(!u.contains_key("rmse") && u.contains_key("pearson"));
    }
}
