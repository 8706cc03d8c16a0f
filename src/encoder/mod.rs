//! The graph encoder: the stage after `features/`. It turns many [`GraphFeatures`] into one
//! disjoint-union batch ([`batch`]), runs a graph neural network over it (GraphConv/k-GNN as
//! GENNAPE, or GIN; [`gnn`]) with a mean readout, concatenated with an MLP of the graph-level
//! features and, optionally, a learned encoder of the text tokens, and gives one embedding per
//! graph. [`augment`] (pure Rust) makes the two views of a graph that contrastive pretraining
//! (NT-Xent, [`gnn::nt_xent`]) compares. Everything that touches tch sits behind the `torch`
//! feature; the augmentations build and test without it.
//!
//! [`GraphFeatures`]: crate::features::GraphFeatures

pub mod augment;
#[cfg(feature = "torch")]
pub mod batch;
pub mod config;
#[cfg(feature = "torch")]
pub mod gnn;

#[cfg(feature = "torch")]
pub use batch::Batch;
pub use config::{EncoderConfig, FeatureDims, GnnKind};
#[cfg(feature = "torch")]
pub use gnn::GraphEncoder;
