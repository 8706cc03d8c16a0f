//! One network featurised: its graph encoded for the encoder (`features::encode_canonical`)
//! with the totals training and baselines read beside it. `nape predict` featurises each file
//! here; `train::data` featurises benchmark families (cached) with the same [`Sample`].

use super::GraphFeatures;
use crate::error::Result;
use crate::graph::Cg;
use crate::onnx::ImportOptions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One featurised network with its free statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// What the encoder reads.
    pub features: GraphFeatures,
    /// Trainable parameters.
    pub params: f64,
    /// Trainable parameters of the canonical graph: those the output depends on (a convolution
    /// that only ever sees zeros, as NB-201's cells with `none` edges have, does not count).
    pub params_effective: f64,
    /// FLOPs.
    pub flops: f64,
}

/// The version of [`Sample`]'s layout, in the cache tag (2: `params_effective`).
pub const SAMPLE_VERSION: u32 = 2;

impl Sample {
    /// Featurises a CG with the given proxy scores (`features::encode` canonicalises it;
    /// params and FLOPs are the graph's own totals).
    pub fn from_cg(cg: &Cg, proxies: &BTreeMap<String, f64>) -> Sample {
        let s = cg.summary();
        let canonical = cg.canonical();
        Sample {
            features: super::encode_canonical(&canonical, proxies),
            params: s.params as f64,
            params_effective: canonical.summary().params as f64,
            flops: s.flops as f64,
        }
    }

    /// The auxiliary regression targets: log10(1 + params), log10(1 + FLOPs).
    pub fn aux(&self) -> [f64; 2] {
        [(1.0 + self.params).log10(), (1.0 + self.flops).log10()]
    }
}

/// Zero-cost proxy scores of a network by name, as [`super::encode`] reads them. The
/// proxies need torch and live above this module, so training code passes them in;
/// [`no_proxies`] gives none.
pub type Scorer<'a> = &'a (dyn Fn(&Cg) -> BTreeMap<String, f64> + Sync);

/// The scorer of a model without proxy features.
pub fn no_proxies(_: &Cg) -> BTreeMap<String, f64> {
    BTreeMap::new()
}

/// Featurises one ONNX file with the proxy scores `scorer` gives it: the path `predict` and
/// the labels flows share.
pub fn featurise_file(path: &Path, opts: &ImportOptions, scorer: Scorer) -> Result<Sample> {
    let cg = crate::onnx::load(path, opts)?;
    Ok(Sample::from_cg(&cg, &scorer(&cg)))
}
