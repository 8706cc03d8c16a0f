//! Benchmark search spaces: architecture specs -> ONNX networks (pipeline stage 2, above
//! [`crate::onnx`], below [`crate::dataset`]).
//!
//! nape learns from benchmarks that describe their networks as specs, not files. Each space
//! here parses its spec format into an [`ArchSpec`] and builds the exact network the benchmark
//! trained, as ONNX, with [`crate::onnx::write::ModelBuilder`]:
//! - [`nb101`]: NAS-Bench-101 cells (pruned adjacency matrix + ops), CIFAR-10 network, plus
//!   the benchmark's pruning and module hash;
//! - [`nb201`]: NAS-Bench-201 / NATS-Bench topology cells (`|nor_conv_3x3~0|+|...|`) for
//!   CIFAR-10, CIFAR-100 and ImageNet16-120;
//! - [`tnb_micro`]: TransNAS-Bench-101 micro cells (`64-41414-1_13_302`) with the
//!   classification heads (`class_scene`, `class_object`).
//!
//! [`flops`] reproduces the FLOP counter NAS-Bench-Suite-Zero used for its published `flops`
//! proxy, over our [`crate::graph::Cg`].

pub mod flops;
pub mod nb101;
pub mod nb201;
pub mod tnb_micro;

pub use flops::{nb201_mflops, torchstat_flops};

use crate::error::{Error, Result};
use crate::onnx::write::{BuiltModel, Weights};
use std::fmt;
use std::str::FromStr;

/// A benchmark search space nape can build networks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// NAS-Bench-101 (CIFAR-10).
    Nb101,
    /// NAS-Bench-201 / NATS-Bench topology search space.
    Nb201,
    /// TransNAS-Bench-101, micro (cell-level) search space.
    TnbMicro,
}

impl Space {
    /// Every space, in a fixed order.
    pub const ALL: [Space; 3] = [Space::Nb101, Space::Nb201, Space::TnbMicro];

    /// The name used on the command line, in manifests and as a record's `family`.
    pub fn name(self) -> &'static str {
        match self {
            Space::Nb101 => "nb101",
            Space::Nb201 => "nb201",
            Space::TnbMicro => "tnb-micro",
        }
    }

    /// Parses a spec string of this space (see each space's `parse`).
    pub fn parse_spec(self, spec: &str) -> Result<ArchSpec> {
        Ok(match self {
            Space::Nb101 => ArchSpec::Nb101(nb101::Cell::parse(spec)?),
            Space::Nb201 => ArchSpec::Nb201(nb201::Arch::parse(spec)?),
            Space::TnbMicro => ArchSpec::TnbMicro(tnb_micro::Arch::parse(spec)?),
        })
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Space {
    type Err = Error;
    fn from_str(s: &str) -> Result<Space> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "nb101" | "nasbench101" | "nas-bench-101" => Ok(Space::Nb101),
            "nb201" | "nasbench201" | "nas-bench-201" | "nats-tss" => Ok(Space::Nb201),
            "tnb-micro" | "tnb101-micro" | "transbench101-micro" => Ok(Space::TnbMicro),
            _ => Err(Error::Usage(format!(
                "unknown search space '{s}': use one of nb101, nb201, tnb-micro"
            ))),
        }
    }
}

/// One architecture of one search space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchSpec {
    /// A NAS-Bench-101 cell.
    Nb101(nb101::Cell),
    /// A NAS-Bench-201 cell.
    Nb201(nb201::Arch),
    /// A TransNAS-Bench-101 micro architecture.
    TnbMicro(tnb_micro::Arch),
}

impl ArchSpec {
    /// The space it belongs to.
    pub fn space(&self) -> Space {
        match self {
            ArchSpec::Nb101(_) => Space::Nb101,
            ArchSpec::Nb201(_) => Space::Nb201,
            ArchSpec::TnbMicro(_) => Space::TnbMicro,
        }
    }

    /// The canonical spec string (what [`Space::parse_spec`] reads back).
    pub fn spec_string(&self) -> String {
        match self {
            ArchSpec::Nb101(c) => c.spec(),
            ArchSpec::Nb201(a) => a.to_string(),
            ArchSpec::TnbMicro(a) => a.to_string(),
        }
    }

    /// Builds the network as ONNX.
    pub fn build(&self, opts: &BuildOptions) -> Result<BuiltModel> {
        match self {
            ArchSpec::Nb101(c) => c.build(opts.weights),
            ArchSpec::Nb201(a) => a.build(opts.nb201_dataset, opts.weights),
            ArchSpec::TnbMicro(a) => a.build(opts.tnb_task, opts.weights),
        }
    }
}

/// How [`ArchSpec::build`] writes networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Weights as data-less graph inputs (small files) or seeded initializers.
    pub weights: Weights,
    /// The NAS-Bench-201 dataset (decides input size and classes).
    pub nb201_dataset: nb201::Dataset,
    /// The TransNAS-Bench-101 task (decides the head).
    pub tnb_task: tnb_micro::Task,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            weights: Weights::Inputs,
            nb201_dataset: nb201::Dataset::Cifar10,
            tnb_task: tnb_micro::Task::ClassScene,
        }
    }
}

/// A [`Error::BadSpec`] for `family`.
pub(crate) fn bad_spec(family: Space, spec: &str, msg: impl Into<String>) -> Error {
    Error::BadSpec { family: family.name().into(), spec: spec.into(), msg: msg.into() }
}

/// Builds the NAS-Bench-style `ReLU -> Conv (no bias) -> BatchNorm` block used by NB-201 and
/// TransNAS-Bench-101 (`ReLUConvBN`); returns the BatchNorm's output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn relu_conv_bn(
    b: &mut crate::onnx::write::ModelBuilder,
    name: &str,
    x: &str,
    out_ch: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> String {
    let r = b.relu(&format!("{name}.relu"), x);
    let c = b.conv(&format!("{name}.conv"), &r, out_ch, k, stride, pad, 1, false);
    b.batch_norm(&format!("{name}.bn"), &c, 1e-5, 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_names_round_trip() {
        for s in Space::ALL {
            assert_eq!(s.name().parse::<Space>().unwrap(), s);
        }
        assert!("nb301".parse::<Space>().is_err());
    }
}
