//! TransNAS-Bench-101, micro (cell-level) search space: an architecture -> the benchmark's
//! classification network (`class_scene`, `class_object`) as ONNX.
//!
//! The network is TransNAS-Bench-101's `MacroNet` with net code `64-41414-a_bc_def` and the
//! `full` structure (encoder + classification head): a stem (3x3 conv stride 2 to 32 channels
//! without bias, BatchNorm, then ReLU-Conv3x3 stride 2-BN to 64 channels); five layers of two
//! cells each, layer type `4` halving the resolution and doubling the channels in its first
//! cell and type `1` keeping both (64 -> 128 -> 128 -> 256 -> 256 -> 512); global average
//! pooling and a linear head (63 scene classes, 100 object classes). A cell has 4 nodes like
//! NAS-Bench-201's; node `j` sums one op applied to every earlier node. Op codes: `0` zeros,
//! `1` identity, `2` ReLU-Conv1x1-BN, `3` ReLU-Conv3x3-BN (convs without bias, BatchNorm
//! affine, eps 1e-5, momentum 0.1). On edges from the cell input of a reducing cell the ops
//! take the stride and the channel change: identity becomes a `FactorizedReduce` (ReLU, two 1x1
//! stride-2 convs to half the channels each, the second on the input shifted by one pixel,
//! concatenation, BatchNorm) and zeros are zeros of the output's shape.
//!
//! How the ONNX differs from the PyTorch module, without changing the function or the
//! parameter count: `FactorizedReduce` shifts its second branch with a `Slice` of rows and
//! columns `1..` (PyTorch pads by one and then slices), and zeros of a reducing edge are the
//! input subsampled with a 1x1 stride-2 max-pool (PyTorch's `x[:, :, ::2, ::2]`), multiplied by
//! 0 and concatenated with themselves to double the channels (PyTorch allocates new zeros).
//!
//! Spec strings are net codes (`64-41414-1_13_302`) or just the cell code (`1_13_302`, with
//! the micro skeleton `64-41414`), or the 6-tuple of NAS-Bench-Suite-Zero's records of the
//! benchmark's tasks, e.g. `(1, 1, 3, 3, 0, 2)`, which lists the same op codes in the same order
//! (edges (0,1), (0,2), (1,2), (0,3), (1,3), (2,3)); its records of NASLib's own trainings use
//! NASLib's ids and edge order instead ([`Arch::from_naslib_tuple`]). Only layer types 1, 3 and
//! 4 are supported (type 2, a channel change without a stride, is not used by the micro space).

use super::{bad_spec, relu_conv_bn, Space};
use crate::error::{Error, Result};
use crate::onnx::write::{BuiltModel, ModelBuilder, Weights};
use std::fmt;
use std::str::FromStr;

/// The micro search space's base channels.
pub const BASE_CHANNELS: usize = 64;
/// The micro search space's layer types.
pub const MACRO_CODE: &str = "41414";
/// Cells per layer.
pub const CELLS_PER_LAYER: usize = 2;
/// Edges of a cell, in code order: the same 4-node cell as NAS-Bench-201's.
pub const EDGES: [(usize, usize); 6] = super::nb201::EDGES;

/// An op on one edge of a micro cell, by its TransNAS-Bench-101 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `0`: zeros.
    Zero,
    /// `1`: identity (a `FactorizedReduce` where the shape changes).
    Identity,
    /// `2`: ReLU, 1x1 conv, BatchNorm.
    Conv1x1,
    /// `3`: ReLU, 3x3 conv, BatchNorm.
    Conv3x3,
}

impl Op {
    /// The op of a code digit.
    pub fn from_code(c: u8) -> Option<Op> {
        Some(match c {
            0 => Op::Zero,
            1 => Op::Identity,
            2 => Op::Conv1x1,
            3 => Op::Conv3x3,
            _ => return None,
        })
    }

    /// The op of an id of NASLib's own TransNAS-Bench-101 micro space (its `OP_NAMES`:
    /// Identity, Zero, ReLUConvBN3x3, ReLUConvBN1x1), which NASLib's trainings on other
    /// datasets record instead of the benchmark's codes ([`Arch::from_naslib_tuple`]).
    pub fn from_naslib_id(id: u8) -> Option<Op> {
        Some(match id {
            0 => Op::Identity,
            1 => Op::Zero,
            2 => Op::Conv3x3,
            3 => Op::Conv1x1,
            _ => return None,
        })
    }

    /// The code digit.
    pub fn code(self) -> u8 {
        match self {
            Op::Zero => 0,
            Op::Identity => 1,
            Op::Conv1x1 => 2,
            Op::Conv3x3 => 3,
        }
    }
}

/// A classification task of TransNAS-Bench-101.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Task {
    /// Scene classification (63 classes).
    #[default]
    ClassScene,
    /// Object classification (100 classes).
    ClassObject,
}

impl Task {
    /// Every classification task.
    pub const ALL: [Task; 2] = [Task::ClassScene, Task::ClassObject];

    /// The benchmark's task name.
    pub fn name(self) -> &'static str {
        match self {
            Task::ClassScene => "class_scene",
            Task::ClassObject => "class_object",
        }
    }

    /// Classes of the head.
    pub fn classes(self) -> usize {
        match self {
            Task::ClassScene => 63,
            Task::ClassObject => 100,
        }
    }

    /// Input shape, batch 1 (TransNAS-Bench-101 feeds 256x256 RGB images).
    pub fn input_shape(self) -> [usize; 4] {
        [1, 3, 256, 256]
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "class_scene" | "scene" => Ok(Task::ClassScene),
            "class_object" | "object" => Ok(Task::ClassObject),
            _ => Err(Error::Usage(format!(
                "unknown TransNAS-Bench-101 classification task '{s}': use class_scene or class_object"
            ))),
        }
    }
}

/// A TransNAS-Bench-101 micro architecture: the skeleton (base channels, layer types) and one
/// op per cell edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// Channels after the stem.
    pub base: usize,
    /// Layer types (`1` keep, `3` stride 2, `4` stride 2 and double channels).
    pub layers: Vec<u8>,
    /// Ops on edges (0,1), (0,2), (1,2), (0,3), (1,3), (2,3).
    pub ops: [Op; 6],
}

impl Arch {
    /// A cell of the micro space's skeleton (`64-41414`).
    pub fn micro(ops: [Op; 6]) -> Arch {
        Arch { base: BASE_CHANNELS, layers: MACRO_CODE.bytes().map(|c| c - b'0').collect(), ops }
    }

    /// Parses a net code, a cell code or a 6-tuple (see the module docs).
    pub fn parse(spec: &str) -> Result<Arch> {
        let bad = |msg: String| bad_spec(Space::TnbMicro, spec, msg);
        let s = spec.trim();
        if s.starts_with('(') || s.starts_with('[') {
            let inner = s.trim_matches(|c| matches!(c, '(' | ')' | '[' | ']'));
            let ids: Vec<u8> = inner
                .split(',')
                .map(|t| {
                    t.trim().parse::<u8>().map_err(|_| bad(format!("'{t}' is not an op code")))
                })
                .collect::<Result<_>>()?;
            return Arch::from_codes(&ids).map_err(|e| rename(e, spec));
        }
        let parts: Vec<&str> = s.split('-').collect();
        let (base, layers, cell) = match parts.as_slice() {
            [cell] => (BASE_CHANNELS, MACRO_CODE.to_string(), *cell),
            [base, layers, cell] => {
                let base: usize =
                    base.parse().map_err(|_| bad(format!("base channels '{base}'")))?;
                (base, layers.to_string(), *cell)
            }
            _ => return Err(bad("expected BASE-LAYERS-CELL, e.g. 64-41414-1_13_302".into())),
        };
        if base < 2 || !base.is_multiple_of(2) {
            return Err(bad(format!("base channels {base} must be even")));
        }
        let layers: Vec<u8> = layers.bytes().map(|c| c.wrapping_sub(b'0')).collect();
        if layers.is_empty() || layers.iter().any(|l| !matches!(l, 1 | 3 | 4)) {
            return Err(bad(
                "layer types must be digits 1 (keep), 3 (stride 2) or 4 (stride 2, double \
                 channels); type 2 is not supported"
                    .into(),
            ));
        }
        let groups: Vec<&str> = cell.split('_').collect();
        if groups.len() != 3 || groups.iter().enumerate().any(|(i, g)| g.len() != i + 1) {
            return Err(bad(format!("cell code '{cell}' is not like 1_13_302")));
        }
        let codes: Vec<u8> = groups.concat().bytes().map(|c| c.wrapping_sub(b'0')).collect();
        let mut arch = Arch::from_codes(&codes).map_err(|e| rename(e, spec))?;
        arch.base = base;
        arch.layers = layers;
        Ok(arch)
    }

    /// The micro-skeleton architecture of 6 op codes in edge order.
    pub fn from_codes(codes: &[u8]) -> Result<Arch> {
        let spec = format!("{codes:?}");
        if codes.len() != 6 {
            return Err(bad_spec(Space::TnbMicro, &spec, "expected 6 op codes"));
        }
        let mut ops = [Op::Zero; 6];
        for (o, &c) in ops.iter_mut().zip(codes) {
            *o = Op::from_code(c).ok_or_else(|| {
                bad_spec(Space::TnbMicro, &spec, format!("op code {c} is not 0, 1, 2 or 3"))
            })?;
        }
        Ok(Arch::micro(ops))
    }

    /// The micro-skeleton architecture of a tuple in NASLib's own convention: op ids per
    /// [`Op::from_naslib_id`] over edges (1,2), (1,3), (1,4), (2,3), (2,4), (3,4) (NASLib's
    /// `EDGE_LIST`, nodes numbered from 1), NAS-Bench-201's tuple convention. NASLib's own
    /// trainings (NAS-Bench-Suite-Zero's SVHN, Spherical CIFAR-100 and NinaPro records of this
    /// space) are recorded so; the benchmark's tasks list the codes ([`Arch::from_codes`]).
    pub fn from_naslib_tuple(t: &[u8]) -> Result<Arch> {
        let spec = format!("{t:?}");
        if t.len() != 6 {
            return Err(bad_spec(Space::TnbMicro, &spec, "expected 6 op ids"));
        }
        let op = |i: usize| {
            Op::from_naslib_id(t[i]).ok_or_else(|| {
                bad_spec(Space::TnbMicro, &spec, format!("NASLib op id {} is not 0-3", t[i]))
            })
        };
        // NASLib order (0,1),(0,2),(0,3),(1,2),(1,3),(2,3) -> code order (0,1),(0,2),(1,2),...
        Ok(Arch::micro([op(0)?, op(1)?, op(3)?, op(2)?, op(4)?, op(5)?]))
    }

    /// The cell code, e.g. `1_13_302` (also used as the record id).
    pub fn cell_code(&self) -> String {
        let c: Vec<char> = self.ops.iter().map(|o| char::from(b'0' + o.code())).collect();
        format!("{}_{}{}_{}{}{}", c[0], c[1], c[2], c[3], c[4], c[5])
    }

    /// The op on edge `src -> dst`.
    pub fn op(&self, src: usize, dst: usize) -> Option<Op> {
        EDGES.iter().position(|&e| e == (src, dst)).map(|i| self.ops[i])
    }

    /// The classification network for `task` as ONNX.
    pub fn build(&self, task: Task, weights: Weights) -> Result<BuiltModel> {
        let spec = self.to_string();
        let mut nb = Net {
            b: ModelBuilder::new("transnas101", "input", &task.input_shape(), weights),
            shifts: Vec::new(),
        };
        nb.b.doc(format!("TransNAS-Bench-101 {task} network {spec}"));
        let b = &mut nb.b;
        let half = self.base / 2;
        let c = b.conv("stem.conv", "input", half, 3, 2, 1, 1, false);
        let bn = b.batch_norm("stem.bn", &c, 1e-5, 0.1);
        let mut x = relu_conv_bn(b, "stem.rcb", &bn, self.base, 3, 2, 1);
        let mut inplanes = self.base;
        for (i, &t) in self.layers.iter().enumerate() {
            let target = if t % 2 == 0 { inplanes * 2 } else { inplanes };
            let stride = if t > 2 { 2 } else { 1 };
            for k in 0..CELLS_PER_LAYER {
                let (cin, s) = if k == 0 { (inplanes, stride) } else { (target, 1) };
                let at = At { c_in: cin, c_out: target, stride: s, spec: &spec };
                x = self.build_cell(&mut nb, &format!("layer{i}.{k}"), &x, at)?;
            }
            inplanes = target;
        }
        let b = &mut nb.b;
        let gap = b.global_avg_pool("avgpool", &x);
        let flat = b.flatten("flatten", &gap);
        let logits = b.linear("head", &flat, task.classes());
        let Net { b, shifts } = nb;
        let mut built = b.finish(&logits);
        apply_shifts(&mut built, &shifts);
        Ok(built)
    }

    /// One cell: node j sums the edges from every earlier node (the first edge of a reducing
    /// cell takes its stride and input channels).
    fn build_cell(&self, nb: &mut Net, name: &str, x: &str, at: At) -> Result<String> {
        let mut nodes: Vec<String> = vec![x.to_string()];
        for j in 1..4 {
            let mut terms = Vec::with_capacity(j);
            for (i, src) in nodes.iter().enumerate() {
                let ename = format!("{name}.edge{i}{j}");
                let op = self.op(i, j).unwrap_or(Op::Zero);
                let src = src.clone();
                let at = if i == 0 { at } else { At { c_in: at.c_out, stride: 1, ..at } };
                terms.push(nb.edge(&ename, op, &src, at)?);
            }
            let node = if terms.len() == 1 {
                terms.remove(0)
            } else {
                nb.b.add(&format!("{name}.node{j}"), &terms)
            };
            nodes.push(node);
        }
        Ok(nodes.remove(3))
    }
}

/// Where an edge sits: its input and output channels, its stride, and the cell's spec (for
/// errors).
#[derive(Clone, Copy)]
struct At<'a> {
    c_in: usize,
    c_out: usize,
    stride: usize,
    spec: &'a str,
}

/// The builder plus the spatial shifts to patch in after finishing.
struct Net {
    b: ModelBuilder,
    /// Names of `Slice` nodes that are spatial shifts (see [`apply_shifts`]).
    shifts: Vec<String>,
}

impl Net {
    /// The edge `op` from `x`, named `name`.
    fn edge(&mut self, name: &str, op: Op, x: &str, at: At) -> Result<String> {
        let At { c_in, c_out, stride, .. } = at;
        let b = &mut self.b;
        Ok(match op {
            Op::Conv1x1 => relu_conv_bn(b, name, x, c_out, 1, stride, 0),
            Op::Conv3x3 => relu_conv_bn(b, name, x, c_out, 3, stride, 1),
            Op::Identity if stride == 1 && c_in == c_out => x.to_string(),
            Op::Identity => self.factorized_reduce(name, x, at)?,
            Op::Zero => self.zero(name, x, at)?,
        })
    }

    /// The identity edge that changes shape: NAS-Bench-201's FactorizedReduce (ReLU, two 1x1
    /// stride-2 convolutions, the second on the input shifted by one pixel, concatenated, BN).
    fn factorized_reduce(&mut self, name: &str, x: &str, at: At) -> Result<String> {
        let At { c_out, stride, spec, .. } = at;
        let b = &mut self.b;
        let shape = b.shape(x).to_vec();
        if stride != 2
            || !shape[2].is_multiple_of(2)
            || !shape[3].is_multiple_of(2)
            || !c_out.is_multiple_of(2)
        {
            return Err(bad_spec(
                Space::TnbMicro,
                spec,
                format!("FactorizedReduce needs stride 2, even sizes and channels; got stride {stride}, shape {shape:?}, {c_out} channels"),
            ));
        }
        let r = b.relu(&format!("{name}.fr.relu"), x);
        let c1 = b.conv(&format!("{name}.fr.conv1"), &r, c_out / 2, 1, 2, 0, 1, false);
        let shifted = b.slice_channels(&format!("{name}.fr.shift"), &r, 0, shape[1]);
        self.shifts.push(format!("{name}.fr.shift"));
        let c2 =
            b.conv(&format!("{name}.fr.conv2"), &shifted, c_out - c_out / 2, 1, 2, 0, 1, false);
        let cat = b.concat(&format!("{name}.fr.concat"), &[c1, c2]);
        Ok(b.batch_norm(&format!("{name}.fr.bn"), &cat, 1e-5, 0.1))
    }

    /// The zero edge: zeros of the (subsampled) input, widened by concatenation when the
    /// channels double.
    fn zero(&mut self, name: &str, x: &str, at: At) -> Result<String> {
        let At { c_in, c_out, stride, spec } = at;
        let b = &mut self.b;
        let sub = if stride == 1 {
            x.to_string()
        } else {
            b.pool(&format!("{name}.subsample"), x, true, 1, stride, 0, false)
        };
        let z = b.zero(&format!("{name}.zero"), &sub);
        match c_out {
            c if c == c_in => Ok(z),
            c if c == 2 * c_in => Ok(b.concat(&format!("{name}.zero.widen"), &[z.clone(), z])),
            _ => Err(bad_spec(
                Space::TnbMicro,
                spec,
                format!("zeros from {c_in} to {c_out} channels"),
            )),
        }
    }
}

/// Turns the placeholder channel slices named in `shifts` into spatial shifts: rows and
/// columns from 1 on (`x[:, :, 1:, 1:]`). The builder tracked them as full-size tensors; the
/// 1x1 stride-2 conv after each gives the same output size either way on even input sizes.
fn apply_shifts(built: &mut BuiltModel, shifts: &[String]) {
    let Some(g) = built.model.graph.as_mut() else { return };
    for name in shifts {
        for t in g.initializer.iter_mut() {
            let v: Option<Vec<i64>> = if t.name == format!("{name}.starts") {
                Some(vec![1, 1])
            } else if t.name == format!("{name}.ends") {
                Some(vec![i64::MAX, i64::MAX])
            } else if t.name == format!("{name}.axes") {
                Some(vec![2, 3])
            } else {
                None
            };
            if let Some(v) = v {
                t.dims = vec![v.len() as i64];
                t.int64_data = v;
            }
        }
    }
}

fn rename(e: Error, spec: &str) -> Error {
    match e {
        Error::BadSpec { family, msg, .. } => Error::BadSpec { family, spec: spec.into(), msg },
        e => e,
    }
}

impl fmt::Display for Arch {
    /// The net code, e.g. `64-41414-1_13_302`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers: String = self.layers.iter().map(|&l| char::from(b'0' + l)).collect();
        write!(f, "{}-{}-{}", self.base, layers, self.cell_code())
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

    #[test]
    fn net_code_cell_code_and_tuple_agree() {
        let a = Arch::parse("64-41414-1_13_302").unwrap();
        assert_eq!(a.to_string(), "64-41414-1_13_302");
        assert_eq!(Arch::parse("1_13_302").unwrap(), a);
        assert_eq!(Arch::parse("(1, 1, 3, 3, 0, 2)").unwrap(), a);
        assert_eq!(a.op(0, 1), Some(Op::Identity));
        assert_eq!(a.op(1, 2), Some(Op::Conv3x3));
        assert_eq!(a.op(0, 3), Some(Op::Conv3x3));
        assert_eq!(a.op(2, 3), Some(Op::Conv1x1));
    }

    #[test]
    fn naslib_tuples_name_ops_and_edges_in_naslib_order() {
        // NASLib: (1,2) Identity, (1,3) Identity, (1,4) 3x3, (2,3) Zero, (2,4) 1x1, (3,4) 1x1
        let a = Arch::from_naslib_tuple(&[0, 0, 2, 1, 3, 3]).unwrap();
        assert_eq!(a.cell_code(), "1_10_322");
        assert_eq!(a.op(0, 3), Some(Op::Conv3x3));
        assert_eq!(a.op(1, 2), Some(Op::Zero));
        assert!(Arch::from_naslib_tuple(&[0, 0, 4, 1, 3, 3]).is_err());
        assert!(Arch::from_naslib_tuple(&[0, 0, 2]).is_err());
    }

    #[test]
    fn bad_codes_are_errors() {
        for bad in [
            "",
            "1_13",
            "1_13_304",
            "64-42414-1_13_302",
            "63-41414-1_13_302",
            "(1, 2)",
            "x-41414-1_13_302",
        ] {
            assert!(Arch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn heads_differ_by_the_class_count() {
        let a = Arch::parse("3_33_333").unwrap();
        let s = a.build(Task::ClassScene, Weights::Inputs).unwrap().params;
        let o = a.build(Task::ClassObject, Weights::Inputs).unwrap().params;
        assert_eq!(o - s, (100 - 63) * (512 + 1));
    }
}
