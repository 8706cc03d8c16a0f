//! The ensemble stage (above the encoder, below train): fuzzy c-means on graph embeddings
//! ([`fcm`], pure Rust) and the classical ridge baseline on graph features and proxies
//! ([`baseline`], pure Rust with linfa).

pub mod baseline;
pub mod fcm;
