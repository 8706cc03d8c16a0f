//! ONNX op -> [`OpKind`], attributes and costs (see `docs/costs.md` for the FLOP conventions).

use super::Static;
use crate::graph::{Attrs, OpKind, Shape};
use tract_onnx::pb;

/// What the loader knows about one node when mapping it.
pub(super) struct NodeCtx<'a> {
    pub pn: &'a pb::NodeProto,
    /// Shapes of the activation inputs, in order.
    pub in_shapes: &'a [Shape],
    /// Shapes of the outputs.
    pub out_shapes: &'a [Shape],
    /// Static operands by ONNX input slot.
    pub statics: &'a [(usize, &'a Static)],
    /// ONNX input slots of the activation inputs.
    pub act_slots: Vec<usize>,
}

/// A mapped node.
#[derive(Debug)]
pub(super) struct Mapped {
    pub kind: OpKind,
    pub attrs: Attrs,
    pub macs: u64,
    pub flops: u64,
}

/// Whether the ONNX op type is in nape's vocabulary.
pub(super) fn is_known(op: &str) -> bool {
    !kind_of(op).is_unknown()
}

fn kind_of(op: &str) -> OpKind {
    use OpKind::*;
    match op {
        "Conv" => Conv,
        "ConvTranspose" => ConvTranspose,
        "Gemm" | "MatMul" | "Einsum" => Linear,
        "BatchNormalization" => BatchNorm,
        "LayerNormalization" => LayerNorm,
        "GroupNormalization" => GroupNorm,
        "InstanceNormalization" => InstanceNorm,
        "LRN" => Lrn,
        "Relu" => Relu,
        "Clip" => Clip,
        "LeakyRelu" | "PRelu" => LeakyRelu,
        "Elu" | "Selu" | "Celu" => Elu,
        "Sigmoid" => Sigmoid,
        "Tanh" => Tanh,
        "Gelu" => Gelu,
        "HardSwish" => HardSwish,
        "HardSigmoid" => HardSigmoid,
        "Mish" => Mish,
        "Softplus" => Softplus,
        "Softmax" => Softmax,
        "LogSoftmax" => LogSoftmax,
        "Add" | "Sum" => Add,
        "Sub" => Sub,
        "Mul" => Mul,
        "Div" => Div,
        "Pow" => Pow,
        "Sqrt" => Sqrt,
        "Exp" => Exp,
        "Log" => Log,
        "Neg" => Neg,
        "Abs" => Abs,
        "Reciprocal" => Reciprocal,
        "Floor" | "Ceil" | "Round" => Round,
        "Mod" => Mod,
        "Loop" => Loop,
        "Erf" => Erf,
        "Max" => Max,
        "Min" => Min,
        "Where" => Where,
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or"
        | "Xor" => Compare,
        "Cast" | "CastLike" => Cast,
        "Concat" => Concat,
        "Split" => Split,
        "Slice" => Slice,
        "Gather" | "GatherElements" | "GatherND" => Gather,
        "Reshape" => Reshape,
        "Flatten" => Flatten,
        "Transpose" => Transpose,
        "Squeeze" => Squeeze,
        "Unsqueeze" => Unsqueeze,
        "Expand" => Expand,
        "Tile" => Tile,
        "Pad" => Pad,
        "Resize" | "Upsample" => Resize,
        "DepthToSpace" => DepthToSpace,
        "SpaceToDepth" => SpaceToDepth,
        "MaxPool" => MaxPool,
        "AveragePool" => AvgPool,
        "GlobalAveragePool" => GlobalAvgPool,
        "GlobalMaxPool" => GlobalMaxPool,
        "ReduceMean" => ReduceMean,
        "ReduceSum" => ReduceSum,
        "ReduceMax" => ReduceMax,
        "ReduceMin" => ReduceMin,
        "ReduceProd" => ReduceProd,
        "ArgMax" | "ArgMin" => ArgMax,
        "LSTM" => Lstm,
        "GRU" => Gru,
        "RNN" => Rnn,
        "ScatterND" | "ScatterElements" | "Scatter" => Scatter,
        "Col2Im" => Col2Im,
        "NonZero" => NonZero,
        "TopK" => TopK,
        "NonMaxSuppression" => Nms,
        "RoiAlign" => RoiAlign,
        other => Unknown(other.to_string()),
    }
}

pub(super) fn attr<'a>(pn: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    pn.attribute.iter().find(|a| a.name == name)
}

pub(super) fn attr_ints(pn: &pb::NodeProto, name: &str) -> Vec<i64> {
    attr(pn, name).map(|a| a.ints.clone()).unwrap_or_default()
}

pub(super) fn attr_int(pn: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(pn, name).map(|a| a.i)
}

pub(super) fn to_usizes(v: &[i64]) -> Vec<usize> {
    v.iter().map(|&x| x.max(0) as usize).collect()
}

/// An ints attribute as usizes, or `len` copies of `default` when it is absent.
pub(super) fn ints_or(pn: &pb::NodeProto, name: &str, default: usize, len: usize) -> Vec<usize> {
    let v = to_usizes(&attr_ints(pn, name));
    if v.is_empty() {
        vec![default; len]
    } else {
        v
    }
}

pub(super) fn numel(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

/// The scalar value of a static operand at `slot`, when known.
pub(super) fn scalar_at(ctx: &NodeCtx, slot: usize) -> Option<f64> {
    let (_, s) = ctx.statics.iter().find(|(sl, _)| *sl == slot)?;
    let t = s.value.as_ref()?;
    if t.len() != 1 {
        return None;
    }
    t.cast_to_scalar::<f64>().ok()
}

/// The integer values of a static operand at `slot` (shapes, block sizes), when known.
pub(super) fn static_ints_at(ctx: &NodeCtx, slot: usize) -> Option<Vec<i64>> {
    let (_, s) = ctx.statics.iter().find(|(sl, _)| *sl == slot)?;
    super::shapes::int_values(s.value.as_ref()?)
}

pub(super) fn static_numel_at(ctx: &NodeCtx, slot: usize) -> Option<u64> {
    ctx.statics.iter().find(|(sl, _)| *sl == slot).map(|(_, s)| s.numel)
}

/// Maps one ONNX node. Errors are messages; the loader adds file, node and op.
pub(super) fn map_node(ctx: &NodeCtx) -> Result<Mapped, String> {
    let op = ctx.pn.op_type.as_str();
    let mut m = Mapped { kind: kind_of(op), attrs: Attrs::default(), macs: 0, flops: 0 };
    let d = Dims::of(ctx);
    let _done = super::map_compute::compute(ctx, &d, &mut m)?
        || super::map_compute::pooling(ctx, &d, &mut m)?
        || layout(ctx, &d, &mut m)?
        || super::map_select::selection(ctx, &d, &mut m)?
        || elementwise(ctx, &d, &mut m)?;
    Ok(m)
}

/// The first output's and first activation input's shapes and element counts.
pub(super) struct Dims {
    pub(super) out: Shape,
    pub(super) out_elems: u64,
    pub(super) in0: Shape,
    pub(super) in_elems: u64,
}

impl Dims {
    fn of(ctx: &NodeCtx) -> Dims {
        let out = ctx.out_shapes.first().cloned().unwrap_or_default();
        let in0 = ctx.in_shapes.first().cloned().unwrap_or_default();
        Dims { out_elems: numel(&out), in_elems: numel(&in0), out, in0 }
    }
}

/// Data movement (concat, gather, reshape, transpose, pad, resize): attributes, no FLOPs. `Ok(false)` when `ctx`'s op is not one of them.
fn layout(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<bool, String> {
    let (pn, op) = (ctx.pn, ctx.pn.op_type.as_str());
    let Dims { out_elems, .. } = d;
    let Mapped { attrs, flops, .. } = m;
    match op {
        "Concat" | "Split" | "Gather" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            if let Some(a) = attr_int(pn, "axis") {
                attrs.axes = vec![a];
            }
            let ax = attr_ints(pn, "axes");
            if !ax.is_empty() {
                attrs.axes = ax;
            }
            *flops = 0;
        }
        "Transpose" => {
            attrs.axes = attr_ints(pn, "perm");
            *flops = 0;
        }
        "Reshape" | "Expand" | "Tile" | "Slice" | "Cast" | "CastLike" | "DepthToSpace"
        | "SpaceToDepth" | "Pad" => {
            if let Some(b) = attr_int(pn, "blocksize") {
                attrs.kernel = vec![b as usize];
            }
            *flops = 0;
        }
        "Resize" | "Upsample" => {
            if let Some(m) = attr(pn, "mode") {
                let mode = String::from_utf8_lossy(&m.s).to_string();
                let code = match mode.as_str() {
                    "nearest" => 0.0,
                    "linear" | "bilinear" => 1.0,
                    _ => 2.0,
                };
                attrs.values.insert("mode".into(), code);
            }
            *flops = *out_elems;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Normalisations, activations and elementwise arithmetic (and every other op). `Ok(false)` when `ctx`'s op is not one of them.
fn elementwise(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<bool, String> {
    let (pn, op) = (ctx.pn, ctx.pn.op_type.as_str());
    let Dims { out_elems, .. } = d;
    let Mapped { kind, attrs, flops, .. } = m;
    match op {
        "BatchNormalization" => *flops = 2 * out_elems,
        "LayerNormalization" | "GroupNormalization" | "InstanceNormalization" => {
            if let Some(a) = attr_int(pn, "axis") {
                attrs.axes = vec![a];
            }
            if let Some(g) = attr_int(pn, "num_groups") {
                attrs.groups = Some(g as usize);
            }
            *flops = 5 * out_elems;
        }
        "LRN" => {
            // a square, a sum over `size` channels, a scale and shift, a power and a division
            let size = attr_int(pn, "size").unwrap_or(1).max(1) as u64;
            attrs.kernel = vec![size as usize];
            for a in pn.attribute.iter().filter(|a| a.r#type == 1) {
                attrs.values.insert(a.name.clone(), a.f as f64);
            }
            *flops = (size + 4) * out_elems;
        }
        "Clip" => {
            let lo = attr(pn, "min").map(|a| a.f as f64).or_else(|| scalar_at(ctx, 1));
            let hi = attr(pn, "max").map(|a| a.f as f64).or_else(|| scalar_at(ctx, 2));
            if lo == Some(0.0) && hi == Some(6.0) {
                *kind = OpKind::Relu6;
            }
            if let Some(v) = lo {
                attrs.values.insert("min".into(), v);
            }
            if let Some(v) = hi {
                attrs.values.insert("max".into(), v);
            }
            *flops = *out_elems;
        }
        "Mul" => {
            // x * 0 is NAS-Bench-201's `none`: an op that outputs zeros
            let zero =
                ctx.statics.iter().any(|(sl, s)| s.numel <= 1 && scalar_at(ctx, *sl) == Some(0.0));
            if zero && ctx.act_slots.len() == 1 {
                *kind = OpKind::Zero;
                *flops = 0;
            } else {
                *flops = *out_elems;
            }
        }
        "Softmax" | "LogSoftmax" => {
            attrs.axes = vec![attr_int(pn, "axis").unwrap_or(-1)];
            *flops = 3 * out_elems;
        }
        "LeakyRelu" | "Elu" | "Selu" | "Celu" | "HardSigmoid" => {
            for a in &pn.attribute {
                if a.r#type == 1 {
                    attrs.values.insert(a.name.clone(), a.f as f64);
                }
            }
            *flops = *out_elems;
        }
        _ => {
            *flops = if kind.is_unknown() { 0 } else { *out_elems };
        }
    }
    Ok(true)
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
