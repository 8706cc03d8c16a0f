//! ONNX semantics of every op the executor runs, on tch tensors.
//!
//! Each node is evaluated from its arguments in ONNX input-slot order (activations, parameters
//! and constants alike) and its ONNX attributes. Shape-only ops (Reshape, Flatten, Squeeze,
//! Unsqueeze, Expand, Tile) take their target from the CG's inferred output shape, with the
//! leading (batch) dimension following the batch actually run, so a graph bound at batch 1 runs
//! at any batch size.

use super::{movement, norms};
use crate::graph::{OpKind, OpNode};
use tch::{Device, Kind, Tensor};

pub(super) type R<T> = std::result::Result<T, String>;

/// What every op needs besides its arguments.
pub(super) struct Ctx {
    pub kind: Kind,
    pub device: Device,
    pub cg_batch: i64,
    pub batch: i64,
    /// Whether autograd records the ops (false inside [`super::no_grad`]): probed once per
    /// forward, when a training-mode BatchNorm first needs to know ([`Ctx::recording`]).
    pub recording: std::cell::OnceCell<bool>,
}

impl Ctx {
    pub fn recording(&self) -> bool {
        *self.recording.get_or_init(super::batchnorm::grad_mode)
    }
}

pub(super) fn e(err: tch::TchError) -> String {
    let s = err.to_string();
    s.lines().next().unwrap_or("libtorch error").to_string()
}

/// The kind an Input node's data takes (float inputs follow the executor's precision).
pub(super) fn input_kind(_node: &OpNode, kind: Kind) -> Kind {
    kind
}

/// Argument `slot`, or an error naming it.
pub(super) fn arg(args: &[Option<Tensor>], slot: usize) -> R<&Tensor> {
    args.get(slot).and_then(|a| a.as_ref()).ok_or_else(|| format!("input {slot} is missing"))
}

pub(super) fn opt(args: &[Option<Tensor>], slot: usize) -> Option<&Tensor> {
    args.get(slot).and_then(|a| a.as_ref())
}

/// The integer values of a small constant tensor (shapes, axes, pads, indices).
pub(super) fn ints(t: &Tensor) -> R<Vec<i64>> {
    let t = t.to_kind(Kind::Int64).to_device(Device::Cpu).flatten(0, -1);
    Vec::<i64>::try_from(&t).map_err(e)
}

fn floats(t: &Tensor) -> R<Vec<f64>> {
    let t = t.to_kind(Kind::Double).to_device(Device::Cpu).flatten(0, -1);
    Vec::<f64>::try_from(&t).map_err(e)
}

pub(super) fn scalar(t: &Tensor) -> R<f64> {
    floats(t)?.first().copied().ok_or_else(|| "an empty scalar".to_string())
}

/// An axis in `0..rank`.
pub(super) fn axis(a: i64, rank: i64) -> R<i64> {
    let v = if a < 0 { a + rank } else { a };
    if (0..rank.max(1)).contains(&v) {
        Ok(v)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

pub(super) fn rank(t: &Tensor) -> i64 {
    t.dim() as i64
}

/// The CG's output shape `slot`, with the batch dimension following the run's batch.
pub(super) fn target(node: &OpNode, slot: usize, ctx: &Ctx) -> R<Vec<i64>> {
    let s = node.out_shapes.get(slot).ok_or_else(|| format!("output {slot} has no shape"))?;
    let mut v: Vec<i64> = s.iter().map(|&d| d as i64).collect();
    if ctx.batch != ctx.cg_batch {
        if let Some(first) = v.first_mut() {
            if *first == ctx.cg_batch {
                *first = ctx.batch;
            } else if ctx.cg_batch > 0 && *first % ctx.cg_batch == 0 {
                // a batch merged with another dimension (B*heads)
                *first = *first / ctx.cg_batch * ctx.batch;
            }
        }
    }
    Ok(v)
}

pub(super) fn spatial_attr(node: &OpNode, name: &str, n: usize, default: i64) -> Vec<i64> {
    match node.attr_ints(name) {
        Some(v) if v.len() == n => v.to_vec(),
        _ => vec![default; n],
    }
}

/// Pads of `n` spatial axes as (begins, ends); `auto_pad` SAME_* computed from the input.
pub(super) fn pads(
    node: &OpNode,
    x: &Tensor,
    kernel: &[i64],
    stride: &[i64],
    dil: &[i64],
) -> (Vec<i64>, Vec<i64>) {
    let n = kernel.len();
    let auto = node.attr_str("auto_pad").unwrap_or("NOTSET");
    if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
        let size = x.size();
        let mut b = vec![0; n];
        let mut en = vec![0; n];
        for i in 0..n {
            let inp = size.get(2 + i).copied().unwrap_or(1);
            let out = (inp + stride[i] - 1) / stride[i];
            let total = ((out - 1) * stride[i] + (kernel[i] - 1) * dil[i] + 1 - inp).max(0);
            let small = total / 2;
            if auto == "SAME_UPPER" {
                b[i] = small;
                en[i] = total - small;
            } else {
                b[i] = total - small;
                en[i] = small;
            }
        }
        return (b, en);
    }
    let p = spatial_attr(node, "pads", 2 * n, 0);
    (p[..n].to_vec(), p[n..].to_vec())
}

/// Pads spatial axes explicitly (torch order: last axis first) with `value`.
pub(super) fn pad_spatial(x: &Tensor, b: &[i64], en: &[i64], value: f64) -> R<Tensor> {
    let mut p = Vec::with_capacity(2 * b.len());
    for i in (0..b.len()).rev() {
        p.push(b[i]);
        p.push(en[i]);
    }
    x.f_pad(p.as_slice(), "constant", Some(value)).map_err(e)
}

/// Evaluates one node: a fused kind, else its ONNX op, by group.
pub(super) fn eval(
    node: &OpNode,
    args: &[Option<Tensor>],
    ctx: &Ctx,
    train: bool,
) -> R<Vec<Tensor>> {
    // fused kinds first: their parts' ONNX ops are joined with '+'
    match node.kind {
        OpKind::Silu if node.onnx_op.contains('+') => {
            let x = arg(args, 0)?;
            return Ok(vec![x.f_mul(&x.f_sigmoid().map_err(e)?).map_err(e)?]);
        }
        OpKind::HardSwish if node.onnx_op.contains('+') => {
            return Ok(vec![arg(args, 0)?.f_hardswish().map_err(e)?]);
        }
        OpKind::Gelu if node.onnx_op.contains('+') => {
            return Ok(vec![arg(args, 0)?.f_gelu("none").map_err(e)?]);
        }
        _ => {}
    }
    let groups: [Group; 7] = [
        weighted,
        norms::normalisation,
        activation,
        parametrised,
        arithmetic,
        movement::layout,
        movement::pooling,
    ];
    for group in groups {
        if let Some(outputs) = group(node, args, ctx, train)? {
            return Ok(outputs);
        }
    }
    match node.kind {
        OpKind::Zero => Ok(vec![arg(args, 0)?.f_mul_scalar(0.0).map_err(e)?]),
        _ => Err(format!("the executor has no implementation of ONNX op '{}'", node.onnx_op)),
    }
}

/// A group's answer for an op with one output.
pub(super) fn one(t: Tensor) -> R<Option<Vec<Tensor>>> {
    Ok(Some(vec![t]))
}

/// One group of ops: its outputs, or `None` when the node's op is not in the group.
type Group = fn(&OpNode, &[Option<Tensor>], &Ctx, bool) -> R<Option<Vec<Tensor>>>;

/// Convolutions and matrix products.
fn weighted(
    node: &OpNode,
    args: &[Option<Tensor>],
    ctx: &Ctx,
    _train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "Conv" => one(conv(node, args, false, ctx)?),
        "ConvTranspose" => one(conv(node, args, true, ctx)?),
        "Gemm" => {
            let (mut a, mut b) = (x()?.shallow_clone(), arg(args, 1)?.shallow_clone());
            if node.attr_int("transA", 0) != 0 {
                a = a.f_transpose(-2, -1).map_err(e)?;
            }
            if node.attr_int("transB", 0) != 0 {
                b = b.f_transpose(-2, -1).map_err(e)?;
            }
            let mut y = a.f_matmul(&b).map_err(e)?;
            let alpha = node.attr_float("alpha", 1.0);
            if alpha != 1.0 {
                y = y.f_mul_scalar(alpha).map_err(e)?;
            }
            if let Some(c) = opt(args, 2) {
                let beta = node.attr_float("beta", 1.0);
                y = y.f_add(&c.f_mul_scalar(beta).map_err(e)?).map_err(e)?;
            }
            one(y)
        }
        "MatMul" => one(x()?.f_matmul(arg(args, 1)?).map_err(e)?),
        "Einsum" => {
            // numpy's notation, which torch reads too (without the spaces ONNX allows)
            let eq: String = node.attr_str("equation").unwrap_or("").split_whitespace().collect();
            let xs: Vec<&Tensor> = args.iter().flatten().collect();
            one(Tensor::f_einsum(&eq, &xs, None::<&[i64]>).map_err(e)?)
        }
        _ => Ok(None),
    }
}

/// Activations without parameters.
fn activation(
    node: &OpNode,
    args: &[Option<Tensor>],
    _ctx: &Ctx,
    _train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "Relu" => one(x()?.f_relu().map_err(e)?),
        "Sigmoid" => one(x()?.f_sigmoid().map_err(e)?),
        "Tanh" => one(x()?.f_tanh().map_err(e)?),
        "Exp" => one(x()?.f_exp().map_err(e)?),
        "Log" => one(x()?.f_log().map_err(e)?),
        "Neg" => one(x()?.f_neg().map_err(e)?),
        "Abs" => one(x()?.f_abs().map_err(e)?),
        "Reciprocal" => one(x()?.f_reciprocal().map_err(e)?),
        "Sqrt" => one(x()?.f_sqrt().map_err(e)?),
        "Erf" => one(x()?.f_erf().map_err(e)?),
        "Softplus" => one(softplus(x()?)?),
        "Mish" => {
            let x = x()?;
            one(x.f_mul(&softplus(x)?.f_tanh().map_err(e)?).map_err(e)?)
        }
        "Gelu" => {
            let approx = node.attr_str("approximate").unwrap_or("none");
            one(x()?.f_gelu(if approx == "tanh" { "tanh" } else { "none" }).map_err(e)?)
        }
        "HardSwish" => one(x()?.f_hardswish().map_err(e)?),
        _ => Ok(None),
    }
}

/// Activations with parameters (slopes, bounds, axes) and softmax.
fn parametrised(
    node: &OpNode,
    args: &[Option<Tensor>],
    _ctx: &Ctx,
    _train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "HardSigmoid" => {
            let (a, b) = (node.attr_float("alpha", 0.2), node.attr_float("beta", 0.5));
            one(x()?
                .f_mul_scalar(a)
                .map_err(e)?
                .f_add_scalar(b)
                .map_err(e)?
                .f_clamp(0.0, 1.0)
                .map_err(e)?)
        }
        "LeakyRelu" => {
            let a = node.attr_float("alpha", 0.01);
            let x = x()?;
            one(x
                .f_relu()
                .map_err(e)?
                .f_sub(&x.f_neg().map_err(e)?.f_relu().map_err(e)?.f_mul_scalar(a).map_err(e)?)
                .map_err(e)?)
        }
        "PRelu" => {
            let x = x()?;
            let slope = arg(args, 1)?;
            let neg = x.f_neg().map_err(e)?.f_relu().map_err(e)?.f_neg().map_err(e)?;
            one(x.f_relu().map_err(e)?.f_add(&neg.f_mul(slope).map_err(e)?).map_err(e)?)
        }
        "Elu" | "Selu" | "Celu" => one(elu(node, x()?)?),
        "Clip" => one(clip(node, x()?, args)?),
        "Softmax" | "LogSoftmax" => {
            let x = x()?;
            let a = axis(node.attr_int("axis", -1), rank(x))?;
            let y = if node.onnx_op == "Softmax" {
                x.f_softmax(a, None::<Kind>)
            } else {
                x.f_log_softmax(a, None::<Kind>)
            };
            one(y.map_err(e)?)
        }
        _ => Ok(None),
    }
}

/// ELU, SELU and CELU: relu(x) + gamma * alpha * expm1(min(x', 0)), x' = x / alpha for CELU.
fn elu(node: &OpNode, x: &Tensor) -> R<Tensor> {
    let (alpha, gamma) = match node.onnx_op.as_str() {
        "Selu" => (
            node.attr_float("alpha", 1.673_263_192_176_818_8),
            node.attr_float("gamma", 1.050_701_022_148_132_3),
        ),
        _ => (node.attr_float("alpha", 1.0), 1.0),
    };
    let inner =
        if node.onnx_op == "Celu" { x.f_div_scalar(alpha).map_err(e)? } else { x.shallow_clone() };
    let neg =
        inner.f_clamp_max(0.0).map_err(e)?.f_expm1().map_err(e)?.f_mul_scalar(alpha).map_err(e)?;
    x.f_relu().map_err(e)?.f_add(&neg).map_err(e)?.f_mul_scalar(gamma).map_err(e)
}

/// Clip: bounds from the attributes (opset < 11) or the optional inputs 1 and 2.
fn clip(node: &OpNode, x: &Tensor, args: &[Option<Tensor>]) -> R<Tensor> {
    let mut lo = node.onnx_attrs.get("min").map(|_| node.attr_float("min", f64::MIN));
    let mut hi = node.onnx_attrs.get("max").map(|_| node.attr_float("max", f64::MAX));
    if let Some(t) = opt(args, 1) {
        lo = Some(scalar(t)?);
    }
    if let Some(t) = opt(args, 2) {
        hi = Some(scalar(t)?);
    }
    let mut y = x.shallow_clone();
    if let Some(l) = lo {
        y = y.f_clamp_min(l).map_err(e)?;
    }
    if let Some(h) = hi {
        y = y.f_clamp_max(h).map_err(e)?;
    }
    Ok(y)
}

/// Elementwise arithmetic, comparisons, selection and casts.
fn arithmetic(
    node: &OpNode,
    args: &[Option<Tensor>],
    ctx: &Ctx,
    _train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "Add" | "Sum" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Equal" | "Less"
        | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" => {
            let items: Vec<&Tensor> = args.iter().flatten().collect();
            let (first, rest) = items.split_first().ok_or("no inputs")?;
            let mut y = first.shallow_clone();
            for t in rest {
                y = binary(node.onnx_op.as_str(), &y, t)?;
            }
            one(y)
        }
        "Not" => one(x()?.f_logical_not().map_err(e)?),
        "Where" => {
            let c = arg(args, 0)?.f_to_kind(Kind::Bool).map_err(e)?;
            one(arg(args, 1)?.f_where_self(&c, arg(args, 2)?).map_err(e)?)
        }
        "Cast" | "CastLike" => {
            let k = if node.onnx_op == "CastLike" {
                arg(args, 1)?.kind()
            } else {
                onnx_kind(node.attr_int("to", 1), ctx.kind)?
            };
            one(x()?.f_to_kind(k).map_err(e)?)
        }
        _ => Ok(None),
    }
}

fn softplus(x: &Tensor) -> R<Tensor> {
    // log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable for large |x|
    let tail =
        x.f_abs().map_err(e)?.f_neg().map_err(e)?.f_exp().map_err(e)?.f_log1p().map_err(e)?;
    x.f_relu().map_err(e)?.f_add(&tail).map_err(e)
}

fn binary(op: &str, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let r = match op {
        "Add" | "Sum" => a.f_add(b),
        "Sub" => a.f_sub(b),
        "Mul" => a.f_mul(b),
        "Div" => {
            if a.kind() == Kind::Int64 && b.kind() == Kind::Int64 {
                a.f_div_tensor_mode(b, "trunc")
            } else {
                a.f_div(b)
            }
        }
        "Pow" => a.f_pow(b),
        "Max" => a.f_maximum(b),
        "Min" => a.f_minimum(b),
        "Equal" => a.f_eq_tensor(b),
        "Less" => a.f_lt_tensor(b),
        "Greater" => a.f_gt_tensor(b),
        "LessOrEqual" => a.f_le_tensor(b),
        "GreaterOrEqual" => a.f_ge_tensor(b),
        "And" => a.f_logical_and(b),
        "Or" => a.f_logical_or(b),
        _ => return Err(format!("no binary op {op}")),
    };
    r.map_err(e)
}

/// ONNX TensorProto data types to tch kinds (floats follow the executor's precision).
fn onnx_kind(t: i64, float: Kind) -> R<Kind> {
    Ok(match t {
        // float32 follows the executor's precision; narrower floats round as they should
        1 | 11 => float,
        10 => Kind::Half,
        16 => Kind::BFloat16,
        2 => Kind::Uint8,
        3 => Kind::Int8,
        5 => Kind::Int16,
        6 => Kind::Int,
        7 | 12 | 13 => Kind::Int64,
        9 => Kind::Bool,
        other => return Err(format!("cast to ONNX type {other} is not supported")),
    })
}

fn conv(node: &OpNode, args: &[Option<Tensor>], transposed: bool, ctx: &Ctx) -> R<Tensor> {
    let x = arg(args, 0)?;
    let w = arg(args, 1)?;
    let b = opt(args, 2);
    let n = (rank(x) - 2).max(1) as usize;
    let kernel: Vec<i64> = w.size()[2..].to_vec();
    let stride = spatial_attr(node, "strides", n, 1);
    let dil = spatial_attr(node, "dilations", n, 1);
    let groups = node.attr_int("group", 1).max(1);
    let (pb, pe) = pads(node, x, &kernel, &stride, &dil);
    if !transposed {
        let (x, padding) = if pb == pe {
            (x.shallow_clone(), pb)
        } else {
            (pad_spatial(x, &pb, &pe, 0.0)?, vec![0; n])
        };
        return x
            .f_convolution(
                w,
                b,
                stride.as_slice(),
                padding.as_slice(),
                dil.as_slice(),
                false,
                vec![0i64; n].as_slice(),
                groups,
            )
            .map_err(e);
    }
    // transposed: full output without padding, then crop the pads (output_padding extends the end)
    let out_pad = spatial_attr(node, "output_padding", n, 0);
    let full = x
        .f_convolution(
            w,
            b,
            stride.as_slice(),
            vec![0i64; n].as_slice(),
            dil.as_slice(),
            true,
            out_pad.as_slice(),
            groups,
        )
        .map_err(e)?;
    let want = target(node, 0, ctx)?;
    let mut y = full;
    for (i, &begin) in pb.iter().enumerate().take(n) {
        let len = want.get(2 + i).copied().ok_or("transposed conv output has no shape")?;
        y = y.f_narrow(2 + i as i64, begin, len).map_err(e)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AttrValue, OpKind};

    /// ONNX's Einsum in numpy's notation, spaces and an ellipsis included (MaxViT's attention
    /// is written so): the batched matrix product it names.
    #[test]
    fn einsum_computes_the_product_its_equation_names() {
        let mut node = OpNode::new(OpKind::Linear, "attn");
        node.onnx_op = "Einsum".into();
        let ctx = Ctx {
            kind: Kind::Float,
            device: Device::Cpu,
            cg_batch: 2,
            batch: 2,
            recording: Default::default(),
        };
        let opts = (Kind::Float, Device::Cpu);
        let (q, k) = (Tensor::randn([2, 3, 4, 5], opts), Tensor::randn([2, 3, 6, 5], opts));
        let want = q.matmul(&k.transpose(-2, -1));
        for eq in ["bhid,bhjd->bhij", "... i d , ... j d -> ... i j"] {
            node.onnx_attrs.insert("equation".into(), AttrValue::Str(eq.into()));
            let args = [Some(q.shallow_clone()), Some(k.shallow_clone())];
            let y = eval(&node, &args, &ctx, false).expect("einsum runs").remove(0);
            let worst = (&y - &want).abs().max().double_value(&[]);
            assert!(worst < 1e-5, "{eq}: {worst}");
        }
    }
}
