//! The ensemble stage (above the encoder, below train): fuzzy c-means on graph embeddings
//! ([`fcm`], pure Rust), the classical ridge baseline on graph features and proxies
//! ([`baseline`], pure Rust with linfa), and the membership-weighted MLP heads ([`heads`], tch)
//! that turn an embedding into a prediction with an uncertainty.

pub mod baseline;
pub mod fcm;
pub mod forest;
#[cfg(feature = "torch")]
pub mod heads;

use serde::{Deserialize, Serialize};

/// Shape of the ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadsConfig {
    /// Number of heads (= fuzzy clusters).
    pub k: usize,
    /// Hidden width of each head.
    pub hidden: i64,
    /// Fuzzifier of the memberships (> 1). None: chosen when the clusters are fitted, from
    /// the number and width of the embeddings ([`fcm::fuzzifier_for`]), and recorded here.
    #[serde(default)]
    pub m: Option<f64>,
}

impl Default for HeadsConfig {
    fn default() -> HeadsConfig {
        HeadsConfig { k: 4, hidden: 64, m: None }
    }
}
