//! The group [`normalisation`] of [`super::ops::eval`]: batch, layer, group and instance
//! normalisation and LRN. Training-mode BatchNorm outside autograd goes to nape's own kernel
//! ([`super::batchnorm`]), which gives libtorch's bits; everything else is libtorch's.

use super::ops::{arg, axis, e, one, opt, rank, Ctx, R};
use crate::graph::OpNode;
use tch::Tensor;

/// Batch, layer, group and instance normalisation.
pub(super) fn normalisation(
    node: &OpNode,
    args: &[Option<Tensor>],
    ctx: &Ctx,
    train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "BatchNormalization" => {
            let eps = node.attr_float("epsilon", 1e-5);
            let (w, b) = (opt(args, 1), opt(args, 2));
            if train {
                if let Some(y) =
                    super::batchnorm::train_forward(x()?, w, b, eps, || ctx.recording())
                {
                    return one(y);
                }
            }
            let y = if train {
                x()?.f_batch_norm(w, b, None::<&Tensor>, None::<&Tensor>, true, 0.1, eps, false)
            } else {
                x()?.f_batch_norm(w, b, opt(args, 3), opt(args, 4), false, 0.1, eps, false)
            };
            one(y.map_err(e)?)
        }
        "LayerNormalization" => one(layer_norm(node, x()?, args)?),
        "LRN" => one(lrn(node, x()?)?),
        "GroupNormalization" => one(group_norm(node, x()?, args)?),
        "InstanceNormalization" => {
            let eps = node.attr_float("epsilon", 1e-5);
            one(x()?
                .f_instance_norm(
                    opt(args, 1),
                    opt(args, 2),
                    None::<&Tensor>,
                    None::<&Tensor>,
                    true,
                    0.1,
                    eps,
                    false,
                )
                .map_err(e)?)
        }
        _ => Ok(None),
    }
}

/// ONNX LayerNormalization over the dims from `axis` on; the scale and bias may be broadcast
/// from fewer dims, so they are expanded to the normalised shape.
fn layer_norm(node: &OpNode, x: &Tensor, args: &[Option<Tensor>]) -> R<Tensor> {
    let a = axis(node.attr_int("axis", -1), rank(x))?;
    let shape: Vec<i64> = x.size()[a as usize..].to_vec();
    let eps = node.attr_float("epsilon", 1e-5);
    let expand = |t: Option<&Tensor>| t.map(|t| t.f_expand(shape.as_slice(), false)).transpose();
    let w = expand(opt(args, 1)).map_err(e)?;
    let b = expand(opt(args, 2)).map_err(e)?;
    x.f_layer_norm(shape.as_slice(), w.as_ref(), b.as_ref(), eps, false).map_err(e)
}

/// ONNX LRN: `x / (bias + alpha / size * sum of squares)^beta`, the sum over channels
/// `c - floor((size - 1) / 2)` to `c + ceil((size - 1) / 2)` (none beyond the ends), as
/// PyTorch's `local_response_norm`: the squares as `[N, 1, C, rest]`, averaged over a window of
/// `size` channels with zeros padded (so the mean is the sum over `size`).
fn lrn(node: &OpNode, x: &Tensor) -> R<Tensor> {
    let size = node.attr_int("size", 1).max(1);
    let alpha = node.attr_float("alpha", 1e-4);
    let (beta, bias) = (node.attr_float("beta", 0.75), node.attr_float("bias", 1.0));
    let dims = x.size();
    if dims.len() < 3 {
        return Err(format!("LRN needs an [N, C, ...] input, not {dims:?}"));
    }
    let rest: i64 = dims[2..].iter().product();
    let squares = x.f_square().map_err(e)?.f_reshape([dims[0], 1, dims[1], rest]).map_err(e)?;
    let (before, after) = ((size - 1) / 2, size - 1 - (size - 1) / 2);
    let padded = squares.f_constant_pad_nd([0, 0, before, after]).map_err(e)?;
    let mean =
        padded.f_avg_pool2d([size, 1], [1, 1], [0, 0], false, true, None::<i64>).map_err(e)?;
    let div = (mean * alpha + bias).f_pow_tensor_scalar(beta).map_err(e)?;
    x.f_div(&div.f_reshape(dims.as_slice()).map_err(e)?).map_err(e)
}

/// ONNX GroupNormalization: opset 18 gives one scale per group, opset 21 one per channel.
fn group_norm(node: &OpNode, x: &Tensor, args: &[Option<Tensor>]) -> R<Tensor> {
    let g = node.attr_int("num_groups", 1).max(1);
    let c = x.size().get(1).copied().unwrap_or(1);
    let eps = node.attr_float("epsilon", 1e-5);
    let per_channel = |t: Option<&Tensor>| -> R<Option<Tensor>> {
        match t {
            Some(t) if t.numel() as i64 == g && g != c => {
                Ok(Some(t.f_repeat_interleave_self_int(c / g, 0, None).map_err(e)?))
            }
            Some(t) => Ok(Some(t.shallow_clone())),
            None => Ok(None),
        }
    };
    let (w, b) = (per_channel(opt(args, 1))?, per_channel(opt(args, 2))?);
    x.f_group_norm(g, w.as_ref(), b.as_ref(), eps, false).map_err(e)
}
