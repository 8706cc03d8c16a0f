//! Data movement, pools and reductions on tch tensors: joining, splitting, indexing, padding,
//! resizing and folding tensors, and every pool, reduction, scatter and recurrent layer.
//! The groups [`layout`] and [`pooling`] of [`super::ops::eval`].

use super::ops::{
    arg, axis, e, ints, one, opt, pad_spatial, pads, rank, scalar, spatial_attr, target, Ctx, R,
};
use super::TchResult;
use crate::graph::OpNode;
use tch::{Kind, Tensor};

/// Joining, splitting, indexing and moving data.
pub(super) fn layout(
    node: &OpNode,
    args: &[Option<Tensor>],
    ctx: &Ctx,
    _train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "Concat" => one(concat(node, args, ctx)?),
        "Split" => {
            let x = x()?;
            let a = axis(node.attr_int("axis", 0), rank(x))?;
            let mut sizes = Vec::new();
            for slot in 0..node.out_shapes.len() {
                sizes.push(
                    target(node, slot, ctx)?.get(a as usize).copied().ok_or("bad split shape")?,
                );
            }
            x.f_split_with_sizes(sizes.as_slice(), a).map(Some).map_err(e)
        }
        "Slice" => one(slice(node, args)?),
        "Gather" => one(gather(node, args)?),
        "GatherElements" => {
            let x = x()?;
            let a = axis(node.attr_int("axis", 0), rank(x))?;
            let idx = arg(args, 1)?.to_kind(Kind::Int64);
            one(x.f_gather(a, &idx, false).map_err(e)?)
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            one(x()?.f_reshape(target(node, 0, ctx)?.as_slice()).map_err(e)?)
        }
        "Expand" => one(x()?.f_expand(target(node, 0, ctx)?.as_slice(), false).map_err(e)?),
        "Tile" => {
            let x = x()?;
            let t = target(node, 0, ctx)?;
            let reps: Vec<i64> =
                x.size().iter().zip(&t).map(|(&i, &o)| if i > 0 { o / i } else { 1 }).collect();
            one(x.f_repeat(reps.as_slice()).map_err(e)?)
        }
        "Transpose" => {
            let x = x()?;
            let perm: Vec<i64> = match node.attr_ints("perm") {
                Some(p) => p.to_vec(),
                None => (0..rank(x)).rev().collect(),
            };
            one(x.f_permute(perm.as_slice()).map_err(e)?)
        }
        "Pad" => one(pad(node, args)?),
        "Resize" | "Upsample" => one(resize(node, args, ctx)?),
        "DepthToSpace" | "SpaceToDepth" => one(depth_space(node, x()?)?),
        "Col2Im" => one(col2im(node, args)?),
        _ => Ok(None),
    }
}

/// Pools, reductions, recurrent layers and scatters.
pub(super) fn pooling(
    node: &OpNode,
    args: &[Option<Tensor>],
    _ctx: &Ctx,
    _train: bool,
) -> R<Option<Vec<Tensor>>> {
    let x = || arg(args, 0);
    match node.onnx_op.as_str() {
        "MaxPool" | "AveragePool" => one(pool(node, x()?)?),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = x()?;
            let dims: Vec<i64> = (2..rank(x)).collect();
            let y = if node.onnx_op == "GlobalAveragePool" {
                x.f_mean_dim(dims.as_slice(), true, None::<Kind>)
            } else {
                x.f_amax(dims.as_slice(), true)
            };
            one(y.map_err(e)?)
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" => {
            one(reduce(node, args)?)
        }
        "ArgMax" | "ArgMin" => {
            let x = x()?;
            let a = axis(node.attr_int("axis", 0), rank(x))?;
            let keep = node.attr_int("keepdims", 1) != 0;
            let y =
                if node.onnx_op == "ArgMax" { x.f_argmax(a, keep) } else { x.f_argmin(a, keep) };
            one(y.map_err(e)?)
        }
        "LSTM" | "GRU" | "RNN" => super::recurrent::eval(node, args).map(Some),
        "ScatterElements" => {
            let reduction = node.attr_str("reduction").unwrap_or("none");
            if reduction != "none" {
                return Err(format!(
                    "ScatterElements with reduction '{reduction}' is not supported"
                ));
            }
            let x = x()?;
            let a = axis(node.attr_int("axis", 0), rank(x))?;
            let index = arg(args, 1)?.to_kind(tch::Kind::Int64);
            one(x.f_scatter(a, &index, arg(args, 2)?).map_err(e)?)
        }
        _ => Ok(None),
    }
}

fn pool(node: &OpNode, x: &Tensor) -> R<Tensor> {
    let n = (rank(x) - 2).max(1) as usize;
    let kernel = spatial_attr(node, "kernel_shape", n, 1);
    let stride = spatial_attr(node, "strides", n, 1);
    let dil = spatial_attr(node, "dilations", n, 1);
    let ceil = node.attr_int("ceil_mode", 0) != 0;
    let (pb, pe) = pads(node, x, &kernel, &stride, &dil);
    let max = node.onnx_op == "MaxPool";
    let include_pad = node.attr_int("count_include_pad", 0) != 0;
    // torch pools take symmetric padding of at most half the kernel; otherwise pad explicitly
    let symmetric = pb == pe && pb.iter().zip(&kernel).all(|(&p, &k)| 2 * p <= k);
    let (x, padding) = if symmetric {
        (x.shallow_clone(), pb.clone())
    } else if max {
        (pad_spatial(x, &pb, &pe, f64::NEG_INFINITY)?, vec![0; n])
    } else if include_pad {
        (pad_spatial(x, &pb, &pe, 0.0)?, vec![0; n])
    } else {
        return Err(
            "average pooling with asymmetric pads that exclude the padding is not supported".into(),
        );
    };
    let (k, s, p, d) = (kernel.as_slice(), stride.as_slice(), padding.as_slice(), dil.as_slice());
    let r = match (max, n) {
        (true, 1) => x.f_max_pool1d(k, s, p, d, ceil),
        (true, 2) => channels_last(&x, |x| x.f_max_pool2d(k, s, p, d, ceil)),
        (true, 3) => x.f_max_pool3d(k, s, p, d, ceil),
        (false, 1) => x.f_avg_pool1d(k, s, p, ceil, include_pad),
        (false, 2) => {
            channels_last(&x, |x| x.f_avg_pool2d(k, s, p, ceil, include_pad, None::<i64>))
        }
        (false, 3) => x.f_avg_pool3d(k, s, p, ceil, include_pad, None::<i64>),
        _ => return Err(format!("pooling over {n} spatial axes is not supported")),
    };
    r.map_err(e)
}

/// Runs a 2-D pool on a channels-last copy of `x` (returned contiguous) when `x` has at least
/// 8 channels. libtorch's contiguous (NCHW) pooling kernels loop over each window element by
/// element; its channels-last ones run the same sums and comparisons, in the same window order,
/// over 8 channels at a time: bitwise the same values and gradients (checked in
/// `channels_last_pools_are_bitwise_the_contiguous_ones`), 3-4x faster forward on NAS cells.
/// (tch has no memory formats: an NHWC copy permuted back to NCHW has channels-last strides,
/// which is how libtorch tells the format.)
fn channels_last(x: &Tensor, pool: impl Fn(&Tensor) -> TchResult<Tensor>) -> TchResult<Tensor> {
    if x.dim() != 4 || x.size()[1] < 8 {
        return pool(x);
    }
    // a round trip on the way in: a channels-last gradient would move the convolutions and
    // normalisations before the pool onto other kernels, whose sums round differently
    let x = through_2d(x)?;
    let nhwc = x.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])?;
    // the same round trip on the way out, the other way: the pool's gradient arrives as an
    // NHWC copy, so its backward runs the channels-last kernel too (libtorch picks the pool
    // backward's kernel by the gradient's layout; the contiguous one is element by element)
    let y = through_2d(&pool(&nhwc)?.f_permute([0, 2, 3, 1])?)?;
    let y = y.f_permute([0, 3, 1, 2])?.f_contiguous()?;
    // and a last one on the NCHW side, for second derivatives (GraSP): their tangent of the
    // pool's output gradient comes back through the permute above as a permute, in
    // channels-last order, and moved the double backward of the convolution after the pool onto
    // other kernels (GraSP on NB-101 cells by 1e-4 to 3e-3)
    through_2d(&y)
}

/// A round trip of a 4-D tensor through a 2-D view (`[N, C*H*W]` and back): nothing in the
/// forward, but its backward reshapes the gradient, which merges the dimensions after the
/// first and so copies a gradient of another layout back to this tensor's. (A reshape: a view
/// of a tensor laid out as its sizes say, a copy of a sliced one, e.g. NASNet's shifted path
/// `x[:, :, 1:, 1:]`, which no view can merge.)
fn through_2d(t: &Tensor) -> TchResult<Tensor> {
    let size = t.size();
    t.f_reshape([size[0], -1])?.f_view(size.as_slice())
}

fn slice(node: &OpNode, args: &[Option<Tensor>]) -> R<Tensor> {
    let x = arg(args, 0)?;
    let r = rank(x);
    let (starts, ends, axes, steps) = if let Some(s) = node.attr_ints("starts") {
        // opset < 10: attributes
        let ends = node.attr_ints("ends").unwrap_or(&[]).to_vec();
        let axes = node
            .attr_ints("axes")
            .map(|a| a.to_vec())
            .unwrap_or_else(|| (0..s.len() as i64).collect());
        (s.to_vec(), ends, axes, vec![1; s.len()])
    } else {
        let starts = ints(arg(args, 1)?)?;
        let ends = ints(arg(args, 2)?)?;
        let axes = match opt(args, 3) {
            Some(t) => ints(t)?,
            None => (0..starts.len() as i64).collect(),
        };
        let steps = match opt(args, 4) {
            Some(t) => ints(t)?,
            None => vec![1; starts.len()],
        };
        (starts, ends, axes, steps)
    };
    let mut y = x.shallow_clone();
    #[allow(clippy::needless_range_loop)] // starts, ends, axes and steps are read in step
    for i in 0..starts.len() {
        let a = axis(*axes.get(i).ok_or("slice axes")?, r)?;
        let dim = y.size()[a as usize];
        let step = *steps.get(i).unwrap_or(&1);
        let clampi = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        if step > 0 {
            let s = clampi(norm(starts[i]), 0, dim);
            let en = clampi(norm(*ends.get(i).ok_or("slice ends")?), 0, dim);
            y = y.f_slice(a, s, en.max(s), step).map_err(e)?;
        } else if step < 0 {
            let s = clampi(norm(starts[i]), -1, dim - 1);
            let en = clampi(norm(*ends.get(i).ok_or("slice ends")?), -1, dim - 1);
            let idx: Vec<i64> = (0..).map(|k| s + k * step).take_while(|&v| v > en).collect();
            let idx = Tensor::from_slice(&idx).to_device(y.device());
            y = y.f_index_select(a, &idx).map_err(e)?;
        } else {
            return Err("a slice step of 0".into());
        }
    }
    Ok(y)
}

fn pad(node: &OpNode, args: &[Option<Tensor>]) -> R<Tensor> {
    let x = arg(args, 0)?;
    let r = rank(x) as usize;
    let raw = match opt(args, 1) {
        Some(t) => ints(t)?,
        None => node.attr_ints("pads").map(|p| p.to_vec()).unwrap_or_default(),
    };
    let value = match opt(args, 2) {
        Some(t) if t.numel() > 0 => scalar(t)?,
        _ => node.attr_float("value", 0.0),
    };
    let axes: Vec<i64> = match opt(args, 3) {
        Some(t) => ints(t)?.into_iter().map(|a| axis(a, r as i64)).collect::<R<_>>()?,
        None => (0..r as i64).collect(),
    };
    if raw.len() != 2 * axes.len() {
        return Err(format!("{} pads for {} axes", raw.len(), axes.len()));
    }
    let mut full_b = vec![0; r];
    let mut full_e = vec![0; r];
    for (i, &a) in axes.iter().enumerate() {
        full_b[a as usize] = raw[i];
        full_e[a as usize] = raw[axes.len() + i];
    }
    // torch order: last axis first, only as many axes as needed
    let first = (0..r).find(|&i| full_b[i] != 0 || full_e[i] != 0).unwrap_or(r);
    let mut p = Vec::new();
    for i in (first..r).rev() {
        p.push(full_b[i]);
        p.push(full_e[i]);
    }
    if p.is_empty() {
        return Ok(x.shallow_clone());
    }
    let mode = match node.attr_str("mode").unwrap_or("constant") {
        "constant" => "constant",
        "reflect" => "reflect",
        "edge" => "replicate",
        "wrap" => "circular",
        m => return Err(format!("pad mode '{m}' is not supported")),
    };
    let value = if mode == "constant" { Some(value) } else { None };
    x.f_pad(p.as_slice(), mode, value).map_err(e)
}

fn resize(node: &OpNode, args: &[Option<Tensor>], ctx: &Ctx) -> R<Tensor> {
    let x = arg(args, 0)?;
    if rank(x) != 4 {
        return Err(format!("resizing a rank-{} tensor is not supported (only NCHW)", rank(x)));
    }
    let want = target(node, 0, ctx)?;
    let size = [want[2], want[3]];
    let in_size = x.size();
    let (sh, sw) = (size[0] as f64 / in_size[2] as f64, size[1] as f64 / in_size[3] as f64);
    let mode = node.attr_str("mode").unwrap_or("nearest");
    let coord = node
        .attr_str("coordinate_transformation_mode")
        .unwrap_or(if node.onnx_op == "Upsample" { "asymmetric" } else { "half_pixel" });
    let align = coord == "align_corners";
    let r = match mode {
        "nearest" => {
            if coord == "asymmetric" {
                x.f_upsample_nearest2d(size.as_slice(), Some(sh), Some(sw))
            } else {
                x.f_internal_upsample_nearest_exact2d(size.as_slice(), Some(sh), Some(sw))
            }
        }
        "linear" | "bilinear" => x.f_upsample_bilinear2d(
            size.as_slice(),
            align,
            if align { None } else { Some(sh) },
            if align { None } else { Some(sw) },
        ),
        "cubic" => x.f_upsample_bicubic2d(
            size.as_slice(),
            align,
            if align { None } else { Some(sh) },
            if align { None } else { Some(sw) },
        ),
        m => return Err(format!("resize mode '{m}' is not supported")),
    };
    r.map_err(e)
}

fn depth_space(node: &OpNode, x: &Tensor) -> R<Tensor> {
    let b = node.attr_int("blocksize", 1).max(1);
    let s = x.size();
    if s.len() != 4 {
        return Err("DepthToSpace/SpaceToDepth need NCHW".into());
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let r = if node.onnx_op == "DepthToSpace" {
        if node.attr_str("mode").unwrap_or("DCR") == "CRD" {
            x.f_reshape([n, c / (b * b), b, b, h, w]).and_then(|t| t.f_permute([0, 1, 4, 2, 5, 3]))
        } else {
            x.f_reshape([n, b, b, c / (b * b), h, w]).and_then(|t| t.f_permute([0, 3, 4, 1, 5, 2]))
        }
        .and_then(|t| t.f_reshape([n, c / (b * b), h * b, w * b]))
    } else {
        x.f_reshape([n, c, h / b, b, w / b, b])
            .and_then(|t| t.f_permute([0, 3, 5, 1, 2, 4]))
            .and_then(|t| t.f_reshape([n, c * b * b, h / b, w / b]))
    };
    r.map_err(e)
}

fn reduce(node: &OpNode, args: &[Option<Tensor>]) -> R<Tensor> {
    let x = arg(args, 0)?;
    let r = rank(x);
    let keep = node.attr_int("keepdims", 1) != 0;
    let mut axes: Vec<i64> = match (node.attr_ints("axes"), opt(args, 1)) {
        (Some(a), _) => a.to_vec(),
        (None, Some(t)) => ints(t)?,
        (None, None) => Vec::new(),
    };
    if axes.is_empty() {
        if node.attr_int("noop_with_empty_axes", 0) != 0 {
            return Ok(x.shallow_clone());
        }
        axes = (0..r).collect();
    }
    let axes: Vec<i64> = axes.into_iter().map(|a| axis(a, r)).collect::<R<_>>()?;
    let y = match node.onnx_op.as_str() {
        "ReduceMean" => x.f_mean_dim(axes.as_slice(), keep, None::<Kind>),
        "ReduceSum" => x.f_sum_dim_intlist(axes.as_slice(), keep, None::<Kind>),
        "ReduceMax" => x.f_amax(axes.as_slice(), keep),
        "ReduceMin" => x.f_amin(axes.as_slice(), keep),
        _ => {
            let mut sorted = axes.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let mut y = x.shallow_clone();
            for a in sorted {
                y = y.f_prod_dim_int(a, keep, None::<Kind>).map_err(e)?;
            }
            Ok(y)
        }
    };
    y.map_err(e)
}

/// ONNX `Gather`: `index_select` along the axis, negative indices counting from the end.
fn gather(node: &OpNode, args: &[Option<Tensor>]) -> R<Tensor> {
    let x = arg(args, 0)?;
    let a = axis(node.attr_int("axis", 0), rank(x))?;
    let idx = arg(args, 1)?.to_kind(Kind::Int64);
    let dim = x.size()[a as usize];
    let idx = idx.f_remainder(dim).map_err(e)?;
    let flat = x.f_index_select(a, &idx.flatten(0, -1)).map_err(e)?;
    let mut shape: Vec<i64> = x.size()[..a as usize].to_vec();
    shape.extend(idx.size());
    shape.extend(&x.size()[a as usize + 1..]);
    flat.f_reshape(shape.as_slice()).map_err(e)
}

/// ONNX `Concat`. A constant the exporter folded at the bound batch (a class token expanded
/// to the batch) follows the batch actually run, as the activations beside it do.
fn concat(node: &OpNode, args: &[Option<Tensor>], ctx: &Ctx) -> R<Tensor> {
    let items: Vec<&Tensor> = args.iter().flatten().collect();
    let r = items.first().map(|t| rank(t)).unwrap_or(1);
    let a = axis(node.attr_int("axis", 0), r)?;
    if a == 0 || ctx.batch == ctx.cg_batch {
        return Tensor::f_cat(&items, a).map_err(e);
    }
    let batched: Vec<Tensor> = items
        .iter()
        .map(|t| match t.size().split_first() {
            Some((&b, rest)) if b == ctx.cg_batch && b != ctx.batch => {
                let mut to = vec![ctx.batch];
                to.extend(rest);
                t.f_expand(to.as_slice(), false).map_err(e)
            }
            _ => Ok(t.shallow_clone()),
        })
        .collect::<R<_>>()?;
    Tensor::f_cat(&batched, a).map_err(e)
}

/// ONNX `Col2Im`: columns [N, C x prod(block), L] summed back into an image [N, C, image...],
/// as PyTorch's `fold` (checked against onnxruntime). Two spatial axes, as `fold` has.
fn col2im(node: &OpNode, args: &[Option<Tensor>]) -> R<Tensor> {
    let x = arg(args, 0)?;
    let image = ints(arg(args, 1)?)?;
    let block = ints(arg(args, 2)?)?;
    if image.len() != 2 || block.len() != 2 || rank(x) != 3 {
        return Err(format!(
            "Col2Im of a rank-{} input over {} spatial axes is not supported (only 2, as PyTorch's fold)",
            rank(x),
            image.len()
        ));
    }
    let stride = spatial_attr(node, "strides", 2, 1);
    let dil = spatial_attr(node, "dilations", 2, 1);
    let p = spatial_attr(node, "pads", 4, 0);
    if p[..2] != p[2..] {
        return Err(format!("Col2Im with pads {p:?} that differ at the two ends is not supported"));
    }
    x.f_col2im(image.as_slice(), block.as_slice(), dil.as_slice(), &p[..2], stride.as_slice())
        .map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AttrValue, OpKind};

    /// Col2Im by its definition: block b of channel c at position l adds its value at image
    /// row `start_h + i * dil_h`, column `start_w + j * dil_w`, less the padding.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        cols: &[f32],
        (n, c, l): (usize, usize, usize),
        (h, w): (i64, i64),
        (kh, kw): (i64, i64),
        s: [i64; 2],
        d: [i64; 2],
        p: [i64; 2],
    ) -> Vec<f32> {
        let blocks_w = (w + 2 * p[1] - d[1] * (kw - 1) - 1) / s[1] + 1;
        let mut out = vec![0f32; n * c * (h * w) as usize];
        for b in 0..n {
            for ch in 0..c {
                for i in 0..kh {
                    for j in 0..kw {
                        let row = (ch as i64 * kh + i) * kw + j;
                        for pos in 0..l as i64 {
                            let y = (pos / blocks_w) * s[0] + i * d[0] - p[0];
                            let x = (pos % blocks_w) * s[1] + j * d[1] - p[1];
                            if (0..h).contains(&y) && (0..w).contains(&x) {
                                let src = (b * c * kh as usize * kw as usize + row as usize) * l
                                    + pos as usize;
                                out[((b * c + ch) * h as usize + y as usize) * w as usize
                                    + x as usize] += cols[src];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn col2im_sums_overlapping_blocks_as_its_definition_says() {
        let (n, c, h, w, kh, kw) = (2usize, 3usize, 7i64, 6i64, 3i64, 2i64);
        let (s, d, p) = ([2, 1], [1, 2], [1, 1]);
        let bh = (h + 2 * p[0] - d[0] * (kh - 1) - 1) / s[0] + 1;
        let bw = (w + 2 * p[1] - d[1] * (kw - 1) - 1) / s[1] + 1;
        let l = (bh * bw) as usize;
        let numel = n * c * (kh * kw) as usize * l;
        let cols: Vec<f32> = (0..numel).map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0).collect();
        let mut node = OpNode::new(OpKind::Col2Im, "fold");
        node.onnx_op = "Col2Im".into();
        node.onnx_attrs.insert("strides".into(), AttrValue::Ints(s.to_vec()));
        node.onnx_attrs.insert("dilations".into(), AttrValue::Ints(d.to_vec()));
        node.onnx_attrs.insert("pads".into(), AttrValue::Ints(vec![p[0], p[1], p[0], p[1]]));
        let x = Tensor::from_slice(&cols).reshape([n as i64, c as i64 * kh * kw, l as i64]);
        let args =
            [Some(x), Some(Tensor::from_slice(&[h, w])), Some(Tensor::from_slice(&[kh, kw]))];
        let y = col2im(&node, &args).expect("col2im runs");
        assert_eq!(y.size(), [n as i64, c as i64, h, w]);
        let got = Vec::<f32>::try_from(&y.flatten(0, -1)).expect("f32");
        let want = naive(&cols, (n, c, l), (h, w), (kh, kw), s, d, p);
        let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "worst difference {worst}");
        // pads that differ at the two ends, and three spatial axes, are refused by name
        node.onnx_attrs.insert("pads".into(), AttrValue::Ints(vec![1, 1, 0, 0]));
        let err = col2im(&node, &args).expect_err("uneven pads");
        assert!(err.contains("pads"), "{err}");
    }

    /// The channels-last route changes no bit of a pool's values or of the gradients before it
    /// (windows with padding, excluded or counted, ceil mode, strides, dilations), the
    /// gradient of a convolution before the pool included: a gradient handed back in
    /// channels-last order would move that convolution's backward onto other kernels. Nor of
    /// the second derivatives GraSP reads (a Hessian-gradient product through the pool and the
    /// convolutions on both sides of it): at 64 channels oneDNN picks its kernels by layout,
    /// and a channels-last tangent moved the one after the pool.
    #[test]
    fn channels_last_pools_are_bitwise_the_contiguous_ones() {
        tch::manual_seed(3);
        let opts = (Kind::Float, tch::Device::Cpu);
        let base = Tensor::randn([2, 64, 9, 11], opts);
        let w = Tensor::randn([64, 64, 3, 3], opts) * 0.05;
        let v = Tensor::randn([64, 64, 3, 3], opts);
        type Pool = Box<dyn Fn(&Tensor) -> TchResult<Tensor>>;
        let pools: Vec<(&str, Pool)> = vec![
            (
                "avg 3x3 s1 p1",
                Box::new(|x| x.f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)),
            ),
            (
                "avg 3x2 s2 p1 incl ceil",
                Box::new(|x| x.f_avg_pool2d([3, 2], [2, 2], [1, 1], true, true, None::<i64>)),
            ),
            ("max 3x3 s1 p1", Box::new(|x| x.f_max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false))),
            (
                "max 2x3 s2 d2 ceil",
                Box::new(|x| x.f_max_pool2d([2, 3], [2, 1], [1, 1], [2, 2], true)),
            ),
        ];
        for (name, pool) in &pools {
            let run = |cl: bool| {
                let ws: Vec<Tensor> =
                    (0..2).map(|i| (&w + i).detach().set_requires_grad(true)).collect();
                let conv =
                    |x: &Tensor, w: &Tensor| x.conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
                let x = conv(&base, &ws[0]).batch_norm(
                    None::<Tensor>,
                    None::<Tensor>,
                    None::<Tensor>,
                    None::<Tensor>,
                    true,
                    0.1,
                    1e-5,
                    false,
                );
                let y = if cl { channels_last(&x, pool) } else { pool(&x) }.expect("pool runs");
                let out = conv(&y, &ws[1]);
                let loss = (&out * &out).mean(Kind::Float);
                let g = Tensor::run_backward(&[loss], &ws, true, true);
                let z = g
                    .iter()
                    .map(|g| (g * &v).sum(Kind::Float))
                    .fold(Tensor::from(0f32), |a, b| a + b);
                let hg = Tensor::run_backward(&[z], &ws, false, false);
                (y.detach(), g.iter().map(|g| g.detach()).collect::<Vec<_>>(), hg)
            };
            let ((y0, g0, h0), (y1, g1, h1)) = (run(false), run(true));
            assert!(y1.is_contiguous(), "{name}: the output goes back to NCHW");
            assert!(y0.equal(&y1), "{name}: values differ");
            for i in 0..2 {
                assert!(g0[i].equal(&g1[i]), "{name}: gradients of convolution {i} differ");
                assert!(
                    h0[i].equal(&h1[i]),
                    "{name}: second derivatives of convolution {i} differ"
                );
            }
        }
    }

    /// A sliced input (NASNet shifts a path by one pixel, `x[:, :, 1:, 1:]`, before its average
    /// pool) is not contiguous: the channels-last route pools it as it pools its copy.
    #[test]
    fn channels_last_pools_take_a_sliced_input() {
        tch::manual_seed(5);
        let base = Tensor::randn([2, 16, 9, 9], (Kind::Float, tch::Device::Cpu));
        let x = base.narrow(2, 1, 8).narrow(3, 1, 8);
        assert!(!x.is_contiguous());
        let pool = |x: &Tensor| x.f_avg_pool2d([1, 1], [2, 2], [0, 0], false, false, None::<i64>);
        let y = channels_last(&x, pool).expect("a sliced input pools");
        assert!(y.equal(&pool(&x.contiguous()).unwrap()));
    }
}
