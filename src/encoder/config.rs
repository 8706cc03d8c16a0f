//! The encoder's shape and the feature dimensions it reads (pure Rust, so configurations and
//! checkpoint metadata parse without libtorch).

use crate::features::{GLOBAL_DIM, MAX_TOKENS, NODE_DIM, OP_VOCAB, TOKEN_VOCAB};
use serde::{Deserialize, Serialize};

/// The feature dimensions a model was built for (recorded in checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureDims {
    /// Op vocabulary size.
    pub op_vocab: usize,
    /// Numeric features per node.
    pub node_dim: usize,
    /// Graph-level features.
    pub global_dim: usize,
    /// Token vocabulary size.
    pub token_vocab: usize,
    /// Longest token sequence.
    pub max_tokens: usize,
}

impl FeatureDims {
    /// The dimensions of this build's `features` module.
    pub fn current() -> FeatureDims {
        FeatureDims {
            op_vocab: OP_VOCAB,
            node_dim: NODE_DIM,
            global_dim: GLOBAL_DIM,
            token_vocab: TOKEN_VOCAB,
            max_tokens: MAX_TOKENS,
        }
    }
}

/// Message-passing layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GnnKind {
    /// GraphConv / k-GNN (GENNAPE).
    GraphConv,
    /// Graph isomorphism network.
    Gin,
}

/// Shape of the encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncoderConfig {
    /// Layer kind.
    pub kind: GnnKind,
    /// Width of node states.
    pub hidden: i64,
    /// Message-passing layers.
    pub layers: usize,
    /// Width of the op embedding.
    pub op_dim: i64,
    /// Use the graph-level features (MLP to `global_hidden`).
    pub use_global: bool,
    /// Width of the graph-level MLP.
    pub global_hidden: i64,
    /// Use the text tokens (learned token encoder).
    pub use_text: bool,
    /// Width of the token embedding.
    pub token_dim: i64,
    /// Width of the graph embedding.
    pub emb_dim: i64,
    /// Read the two local poolings (max, average) as one op, and the two global ones as one
    /// ([`crate::features::pool_class`]): the op embedding and the op-kind histogram see a
    /// pooling, not its kind, so what a model learnt of NB-101's max pools carries to NB-201's
    /// average pools (docs/universal.md). Off by default, as in every checkpoint written
    /// before it, which reads each pooling as its own op.
    pub pools_as_one: bool,
}

impl Default for EncoderConfig {
    fn default() -> EncoderConfig {
        EncoderConfig {
            kind: GnnKind::GraphConv,
            hidden: 64,
            layers: 6,
            op_dim: 16,
            use_global: true,
            global_hidden: 32,
            use_text: false,
            token_dim: 32,
            emb_dim: 64,
            pools_as_one: false,
        }
    }
}
