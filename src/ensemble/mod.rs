//! The ensemble stage (above the encoder, below train): fuzzy c-means on graph embeddings
//! ([`fcm`], pure Rust), the classical ridge baseline on graph features and proxies
//! ([`baseline`], pure Rust with linfa), and the membership-weighted MLP heads ([`heads`], tch)
//! that turn an embedding into a prediction with an uncertainty.

pub mod baseline;
pub mod fcm;
#[cfg(feature = "torch")]
pub mod heads;
