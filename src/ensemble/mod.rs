//! The ensemble: the stage after the encoder. Fuzzy c-means (pure Rust) clusters graph
//! embeddings; membership-weighted MLP heads ([`heads`], tch) turn an embedding into a
//! prediction with an uncertainty.

#[cfg(feature = "torch")]
pub mod heads;
