//! nape predicts the trained accuracy of a neural network from its ONNX file.
//!
//! The pipeline flows one way: [`onnx`] reads a file into a [`graph::Cg`] (the ground floor);
//! [`spaces`] turns benchmark specs into ONNX; [`dataset`] holds labelled records; later stages
//! (features, proxies, encoder, ensemble) read graphs and never import back down the chain.

pub mod dataset;
pub mod encoder;
pub mod ensemble;
pub mod error;
#[cfg(feature = "torch")]
pub mod exec;
pub mod features;
pub mod graph;
pub mod metrics;
pub mod onnx;
#[cfg(feature = "torch")]
pub mod predict;
#[cfg(feature = "torch")]
pub mod proxies;
pub mod spaces;
pub mod train;

pub use error::{Error, Result};
pub mod cli;
