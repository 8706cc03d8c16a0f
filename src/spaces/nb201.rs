//! NAS-Bench-201 / NATS-Bench topology search space: an arch string -> the benchmark's network
//! as ONNX, for CIFAR-10, CIFAR-100 and ImageNet16-120.
//!
//! The network is NAS-Bench-201's `TinyNetwork` (C = 16, N = 5): a stem (3x3 conv to 16
//! channels, no bias, BatchNorm); three stages of five cells, with a ResNet basic block between
//! stages that halves the resolution and doubles the channels (16 -> 32 -> 64: ReLU-Conv3x3
//! stride 2-BN, ReLU-Conv3x3-BN, and a residual of 2x2 stride-2 average pooling then a 1x1
//! conv without bias); then BatchNorm + ReLU (`lastact`), global average pooling and a linear
//! classifier. A cell has 4 nodes; node `j` sums one op applied to every earlier node. Ops:
//! `nor_conv_1x1` and `nor_conv_3x3` (ReLU, conv without bias, BatchNorm with affine scale and
//! shift), `avg_pool_3x3` (stride 1, padding 1, `count_include_pad=False`), `skip_connect`
//! (identity) and `none` (zeros, written as a multiplication by 0). BatchNorm: eps 1e-5,
//! momentum 0.1, as PyTorch's default.
//!
//! Spec strings are the benchmark's arch strings, node by node, each incoming edge as
//! `op~source`: `|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`.

use super::{bad_spec, relu_conv_bn, Space};
use crate::error::{Error, Result};
use crate::onnx::write::{BuiltModel, ModelBuilder, Weights};
use std::fmt;
use std::str::FromStr;

/// Channels of the first stage.
pub const BASE_CHANNELS: usize = 16;
/// Cells per stage.
pub const CELLS_PER_STAGE: usize = 5;
/// Edges of a cell, in arch-string order: (0,1), (0,2), (1,2), (0,3), (1,3), (2,3).
pub const EDGES: [(usize, usize); 6] = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)];

/// An op on one edge of an NB-201 cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Zeros (`none`).
    None,
    /// Identity (`skip_connect`).
    SkipConnect,
    /// ReLU, 1x1 conv, BatchNorm (`nor_conv_1x1`).
    NorConv1x1,
    /// ReLU, 3x3 conv, BatchNorm (`nor_conv_3x3`).
    NorConv3x3,
    /// 3x3 average pooling, stride 1 (`avg_pool_3x3`).
    AvgPool3x3,
}

impl Op {
    /// Every op.
    pub const ALL: [Op; 5] =
        [Op::None, Op::SkipConnect, Op::NorConv1x1, Op::NorConv3x3, Op::AvgPool3x3];

    /// The benchmark's name.
    pub fn name(self) -> &'static str {
        match self {
            Op::None => "none",
            Op::SkipConnect => "skip_connect",
            Op::NorConv1x1 => "nor_conv_1x1",
            Op::NorConv3x3 => "nor_conv_3x3",
            Op::AvgPool3x3 => "avg_pool_3x3",
        }
    }

    /// Parses a benchmark op name.
    pub fn from_name(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }

    /// NASLib's op id (0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1, 4 avg_pool_3x3).
    pub fn from_naslib_id(id: u8) -> Option<Op> {
        Some(match id {
            0 => Op::SkipConnect,
            1 => Op::None,
            2 => Op::NorConv3x3,
            3 => Op::NorConv1x1,
            4 => Op::AvgPool3x3,
            _ => return None,
        })
    }
}

/// A dataset NAS-Bench-201 trained on: it sets the input resolution and the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Dataset {
    /// CIFAR-10: 32x32, 10 classes.
    #[default]
    Cifar10,
    /// CIFAR-100: 32x32, 100 classes.
    Cifar100,
    /// ImageNet16-120: 16x16, 120 classes.
    ImageNet16,
}

impl Dataset {
    /// Every dataset.
    pub const ALL: [Dataset; 3] = [Dataset::Cifar10, Dataset::Cifar100, Dataset::ImageNet16];

    /// Short name (`cifar10`, `cifar100`, `imagenet16`), used in label names.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
            Dataset::ImageNet16 => "imagenet16",
        }
    }

    /// The name NASLib's records use (`cifar10`, `cifar100`, `ImageNet16-120`).
    pub fn naslib_name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
            Dataset::ImageNet16 => "ImageNet16-120",
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            Dataset::Cifar10 => 10,
            Dataset::Cifar100 => 100,
            Dataset::ImageNet16 => 120,
        }
    }

    /// Input shape, batch 1.
    pub fn input_shape(self) -> [usize; 4] {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => [1, 3, 32, 32],
            Dataset::ImageNet16 => [1, 3, 16, 16],
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Dataset> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(Dataset::Cifar10),
            "cifar100" | "cifar-100" => Ok(Dataset::Cifar100),
            "imagenet16" | "imagenet16-120" | "imagenet" => Ok(Dataset::ImageNet16),
            _ => Err(Error::Usage(format!(
                "unknown NAS-Bench-201 dataset '{s}': use cifar10, cifar100 or imagenet16"
            ))),
        }
    }
}

/// An NB-201 cell: one op per edge, in [`EDGES`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// Ops on edges (0,1), (0,2), (1,2), (0,3), (1,3), (2,3).
    pub ops: [Op; 6],
}

impl Arch {
    /// Parses an arch string (see the module docs). Within a node the edges may come in any
    /// order, but each earlier node must appear exactly once.
    pub fn parse(spec: &str) -> Result<Arch> {
        let bad = |msg: String| bad_spec(Space::Nb201, spec, msg);
        let s = spec.trim();
        let nodes: Vec<&str> = s.split('+').collect();
        if nodes.len() != 3 {
            return Err(bad(format!("{} nodes, expected 3 separated by '+'", nodes.len())));
        }
        let mut ops: [Option<Op>; 6] = [None; 6];
        for (j, node) in nodes.iter().enumerate() {
            let node = node.trim();
            let inner = node
                .strip_prefix('|')
                .and_then(|n| n.strip_suffix('|'))
                .ok_or_else(|| bad(format!("node '{node}' is not enclosed in '|'")))?;
            let edges: Vec<&str> = inner.split('|').collect();
            if edges.len() != j + 1 {
                return Err(bad(format!(
                    "node {} has {} edges, expected {}",
                    j + 1,
                    edges.len(),
                    j + 1
                )));
            }
            for e in edges {
                let (op, src) =
                    e.split_once('~').ok_or_else(|| bad(format!("edge '{e}' is not op~source")))?;
                let op = Op::from_name(op).ok_or_else(|| bad(format!("unknown op '{op}'")))?;
                let src: usize =
                    src.parse().map_err(|_| bad(format!("source '{src}' is not a number")))?;
                let slot = EDGES
                    .iter()
                    .position(|&(a, b)| a == src && b == j + 1)
                    .ok_or_else(|| bad(format!("node {} has no input from node {src}", j + 1)))?;
                if ops[slot].replace(op).is_some() {
                    return Err(bad(format!("edge {src}->{} given twice", j + 1)));
                }
            }
        }
        let mut out = [Op::None; 6];
        for (o, v) in out.iter_mut().zip(ops) {
            *o = v.ok_or_else(|| bad("an edge is missing".into()))?;
        }
        Ok(Arch { ops: out })
    }

    /// From NASLib's 6-tuple of op ids over edges (1,2), (1,3), (1,4), (2,3), (2,4), (3,4)
    /// (NASLib numbers nodes from 1) with ids per [`Op::from_naslib_id`].
    pub fn from_naslib_tuple(t: &[u8]) -> Result<Arch> {
        let spec = format!("{t:?}");
        if t.len() != 6 {
            return Err(bad_spec(Space::Nb201, &spec, "expected 6 op ids"));
        }
        let op = |i: usize| {
            Op::from_naslib_id(t[i])
                .ok_or_else(|| bad_spec(Space::Nb201, &spec, format!("unknown op id {}", t[i])))
        };
        // NASLib order (0,1),(0,2),(0,3),(1,2),(1,3),(2,3) -> ours (0,1),(0,2),(1,2),(0,3),(1,3),(2,3)
        Ok(Arch { ops: [op(0)?, op(1)?, op(3)?, op(2)?, op(4)?, op(5)?] })
    }

    /// The op on edge `src -> dst`.
    pub fn op(&self, src: usize, dst: usize) -> Option<Op> {
        EDGES.iter().position(|&e| e == (src, dst)).map(|i| self.ops[i])
    }

    /// The full network as ONNX for `dataset`.
    pub fn build(&self, dataset: Dataset, weights: Weights) -> Result<BuiltModel> {
        let spec = self.to_string();
        let mut b = ModelBuilder::new("nasbench201", "input", &dataset.input_shape(), weights);
        b.doc(format!("NAS-Bench-201 {dataset} network of cell {spec}"));
        let c = b.conv("stem.conv", "input", BASE_CHANNELS, 3, 1, 1, 1, false);
        let mut x = b.batch_norm("stem.bn", &c, 1e-5, 0.1);
        let mut channels = BASE_CHANNELS;
        let mut index = 0;
        for stage in 0..3 {
            if stage > 0 {
                x = resnet_basic_block(&mut b, &format!("cells.{index}"), &x, channels * 2);
                channels *= 2;
                index += 1;
            }
            for _ in 0..CELLS_PER_STAGE {
                x = self.build_cell(&mut b, &format!("cells.{index}"), &x);
                index += 1;
            }
        }
        let bn = b.batch_norm("lastact.bn", &x, 1e-5, 0.1);
        let r = b.relu("lastact.relu", &bn);
        let gap = b.global_avg_pool("global_pooling", &r);
        let flat = b.flatten("flatten", &gap);
        let logits = b.linear("classifier", &flat, dataset.classes());
        Ok(b.finish(&logits))
    }

    /// One cell (stride 1, channels unchanged); returns node 3.
    fn build_cell(&self, b: &mut ModelBuilder, name: &str, x: &str) -> String {
        let channels = b.shape(x)[1];
        let mut nodes: Vec<String> = vec![x.to_string()];
        for j in 1..4 {
            let mut terms = Vec::with_capacity(j);
            for (i, src) in nodes.iter().enumerate() {
                let ename = format!("{name}.edge{i}{j}");
                let op = self.op(i, j).unwrap_or(Op::None);
                let src = src.clone();
                terms.push(match op {
                    Op::None => b.zero(&format!("{ename}.none"), &src),
                    Op::SkipConnect => src,
                    Op::NorConv1x1 => relu_conv_bn(b, &ename, &src, channels, 1, 1, 0),
                    Op::NorConv3x3 => relu_conv_bn(b, &ename, &src, channels, 3, 1, 1),
                    Op::AvgPool3x3 => {
                        b.pool(&format!("{ename}.avgpool"), &src, false, 3, 1, 1, false)
                    }
                });
            }
            let node = if terms.len() == 1 {
                terms.remove(0)
            } else {
                b.add(&format!("{name}.node{j}"), &terms)
            };
            nodes.push(node);
        }
        nodes.remove(3)
    }
}

/// NAS-Bench-201's `ResNetBasicblock(C_in, C_out, stride=2)`: ReLUConvBN 3x3 stride 2, then
/// ReLUConvBN 3x3, plus a residual of AvgPool 2x2 stride 2 and a 1x1 conv without bias.
fn resnet_basic_block(b: &mut ModelBuilder, name: &str, x: &str, out_ch: usize) -> String {
    let a = relu_conv_bn(b, &format!("{name}.conv_a"), x, out_ch, 3, 2, 1);
    let bb = relu_conv_bn(b, &format!("{name}.conv_b"), &a, out_ch, 3, 1, 1);
    let p = b.pool(&format!("{name}.downsample.avgpool"), x, false, 2, 2, 0, false);
    let r = b.conv(&format!("{name}.downsample.conv"), &p, out_ch, 1, 1, 0, 1, false);
    b.add(&format!("{name}.add"), &[r, bb])
}

impl fmt::Display for Arch {
    /// The benchmark's arch string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for j in 1..4 {
            if !first {
                f.write_str("+")?;
            }
            first = false;
            f.write_str("|")?;
            for i in 0..j {
                let op = self.op(i, j).unwrap_or(Op::None);
                write!(f, "{}~{i}|", op.name())?;
            }
        }
        Ok(())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Arch> {
        Arch::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";

    #[test]
    fn arch_string_round_trips() {
        let a = Arch::parse(EXAMPLE).unwrap();
        assert_eq!(a.to_string(), EXAMPLE);
        assert_eq!(a.op(1, 2), Some(Op::AvgPool3x3));
        assert_eq!(a.op(2, 3), Some(Op::SkipConnect));
    }

    #[test]
    fn naslib_tuple_order_is_converted() {
        // SOURCE.md: arch string = |e12~0|+|e13~0|e23~1|+|e14~0|e24~1|e34~2|
        let a = Arch::from_naslib_tuple(&[2, 2, 0, 4, 2, 0]).unwrap();
        assert_eq!(a.to_string(), EXAMPLE);
    }

    #[test]
    fn bad_strings_are_errors() {
        for bad in [
            "",
            "|none~0|",
            "|none~0|+|none~0|none~1|+|none~0|none~1|",
            "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|",
            "|nope~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~5|",
            "|none0|+|none~0|none~1|+|none~0|none~1|none~2|",
        ] {
            assert!(Arch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_conv3x3_cifar10_has_the_known_size() {
        // every edge nor_conv_3x3: 6 * (16*16*9 + 32) per stage-1 cell, etc.
        let a = Arch { ops: [Op::NorConv3x3; 6] };
        let m = a.build(Dataset::Cifar10, Weights::Inputs).unwrap();
        let cell = |c: usize| 6 * (c * c * 9 + 2 * c);
        let block = |i: usize, o: usize| i * o * 9 + 2 * o + o * o * 9 + 2 * o + i * o;
        let want = 3 * 16 * 9
            + 32
            + 5 * (cell(16) + cell(32) + cell(64))
            + block(16, 32)
            + block(32, 64)
            + 128
            + 64 * 10
            + 10;
        assert_eq!(m.params, want as u64);
    }
}
