//! Costs and attributes of the ops that do the arithmetic: convolutions, contractions (Gemm,
//! MatMul, Einsum), recurrent layers, pools and reductions (see `docs/costs.md`).

use super::map::{
    attr, attr_int, attr_ints, ints_or, numel, static_ints_at, static_numel_at, to_usizes, Dims,
    Mapped, NodeCtx,
};
use crate::graph::{OpKind, Shape};
use tract_onnx::pb;

/// Convolutions and contractions (Gemm, MatMul, Einsum): MACs and FLOPs. `Ok(false)` when `ctx`'s op is not one of them.
pub(super) fn compute(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<bool, String> {
    let (pn, op) = (ctx.pn, ctx.pn.op_type.as_str());
    let Dims { out, out_elems, in0, .. } = d;
    let Mapped { kind, attrs, macs, flops } = m;
    let act_at = |slot: usize| ctx.act_slots.contains(&slot);
    if matches!(op, "Gemm" | "MatMul" | "Einsum") {
        // a contraction with a weight is a fully-connected layer
        let weight_operand = ctx.statics.iter().any(|(_, s)| s.float && s.numel > 1);
        *kind = if weight_operand { OpKind::Linear } else { OpKind::MatMul };
    }
    match op {
        "Conv" | "ConvTranspose" => conv(ctx, d, m)?,
        "Gemm" | "MatMul" => {
            // inner dimension K: from the first operand (activation or static)
            let trans_a = attr_int(pn, "transA").unwrap_or(0) != 0;
            let k = if act_at(0) {
                if op == "Gemm" && trans_a {
                    in0.first().copied().unwrap_or(0)
                } else {
                    in0.last().copied().unwrap_or(0)
                }
            } else if let Some(b) = act_shape_at(ctx, 1) {
                // A is static, B an activation: K is B's contracted dim (a batched static A,
                // such as a folded relative-position table, has more than rows x K elements)
                let trans_b = attr_int(pn, "transB").unwrap_or(0) != 0;
                let k = match (op, b.len()) {
                    ("Gemm", _) if trans_b => b.last(),
                    ("Gemm", _) | (_, 1) => b.first(),
                    (_, r) => b.get(r - 2),
                };
                k.copied().unwrap_or(0)
            } else {
                // both static (not a compute node in practice): K = numel(A) / rows of the output
                let a = static_numel_at(ctx, 0).unwrap_or(0);
                let rows = if out.len() >= 2 { out[out.len() - 2] as u64 } else { 1 };
                (a / rows.max(1)) as usize
            };
            let bias = op == "Gemm" && pn.input.get(2).is_some_and(|s| !s.is_empty());
            attrs.bias = Some(bias);
            *macs = out_elems * k as u64;
            *flops = 2 * *macs + if bias { *out_elems } else { 0 };
        }
        "Einsum" => {
            *macs = einsum_macs(ctx)?;
            *flops = 2 * *macs;
        }
        "LSTM" | "GRU" | "RNN" => recurrent(ctx, d, m)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A recurrent layer over its whole sequence: every step of every direction multiplies the
/// input by W and the state by R, so MACs are `steps x batch x (numel(W) + numel(R))` (W is
/// `[directions, gates x hidden, input]`); FLOPs twice that, plus three per gate element (the two
/// biases and the gate's activation or update).
fn recurrent(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<(), String> {
    let op = ctx.pn.op_type.as_str();
    if !ctx.act_slots.contains(&0) {
        return Err(format!("the sequence input of {op} is a constant"));
    }
    let (Some(w), Some(r)) = (static_numel_at(ctx, 1), static_numel_at(ctx, 2)) else {
        return Err(format!("the weights W and R of {op} are not constants or weight inputs"));
    };
    let input = d.in0.last().copied().unwrap_or(0) as u64;
    if input == 0 || !d.in_elems.is_multiple_of(input) || !w.is_multiple_of(input) {
        return Err(format!("the input {:?} does not match W's {w} weights", d.in0));
    }
    let steps_x_batch = d.in_elems / input;
    let gate_elems = steps_x_batch * (w / input); // directions x gates x hidden, per step and sample
    m.attrs.bias = Some(ctx.pn.input.get(3).is_some_and(|s| !s.is_empty()));
    if custom_activations(ctx.pn) {
        // the CG keeps no string lists: the executor refuses the node rather than guess
        m.attrs.values.insert("custom_activations".into(), 1.0);
    }
    m.macs = steps_x_batch * (w + r);
    m.flops = 2 * m.macs + 3 * gate_elems;
    Ok(())
}

/// Whether a recurrent node names activations other than its op's defaults.
fn custom_activations(pn: &pb::NodeProto) -> bool {
    let defaults: &[&[u8]] = match pn.op_type.as_str() {
        "LSTM" => &[b"Sigmoid", b"Tanh", b"Tanh"],
        "GRU" => &[b"Sigmoid", b"Tanh"],
        _ => &[b"Tanh"],
    };
    attr(pn, "activations").is_some_and(|a| {
        a.strings
            .chunks(defaults.len())
            .any(|dir| dir.iter().map(Vec::as_slice).ne(defaults.iter().copied()))
    })
}

/// A convolution (or its transpose): kernel, strides, dilations, padding, groups, bias; MACs
/// `out x C_in/groups x prod(kernel)` (transposed: `in x C_out/groups x prod(kernel)`).
fn conv(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<(), String> {
    let (pn, op) = (ctx.pn, ctx.pn.op_type.as_str());
    let Dims { out, out_elems, in0, in_elems, .. } = d;
    let Mapped { attrs, macs, flops, .. } = m;
    let act_at = |slot: usize| ctx.act_slots.contains(&slot);
    if !act_at(0) {
        return Err("the data input of a convolution is a constant".into());
    }
    // a kernel computed from the input (CondConv, dynamic convolution) is an activation: its
    // values are not parameters of this node, but its shape gives the kernel
    let computed_kernel = act_shape_at(ctx, 1);
    let Some(wn) = static_numel_at(ctx, 1).or(computed_kernel.map(|s| numel(s))) else {
        return Err("the convolution has no weight input".into());
    };
    let spatial = in0.len().saturating_sub(2);
    let mut kernel = to_usizes(&attr_ints(pn, "kernel_shape"));
    if let Some(k) = computed_kernel.filter(|k| kernel.is_empty() && k.len() == spatial + 2) {
        kernel = k[2..].to_vec();
    }
    let groups = attr_int(pn, "group").unwrap_or(1).max(1) as usize;
    let cin = in0.get(1).copied().unwrap_or(0);
    let cout = out.get(1).copied().unwrap_or(0);
    if kernel.is_empty() {
        // infer kernel from weight numel: numel = cout * cin/g * prod(k) (conv)
        let per = if op == "Conv" {
            cout as u64 * (cin / groups) as u64
        } else {
            cin as u64 * (cout / groups) as u64
        };
        let k = wn.checked_div(per).unwrap_or(0);
        let side = (k as f64).powf(1.0 / spatial.max(1) as f64).round() as usize;
        kernel = vec![side; spatial];
    }
    attrs.kernel = kernel.clone();
    attrs.stride = ints_or(pn, "strides", 1, spatial);
    attrs.dilation = ints_or(pn, "dilations", 1, spatial);
    attrs.padding = if op == "Conv" {
        pads_of(pn, d, &kernel, &attrs.stride, &attrs.dilation)
    } else {
        ints_or(pn, "pads", 0, 2 * spatial)
    };
    attrs.groups = Some(groups);
    let bias = ctx.statics.iter().any(|(sl, _)| *sl == 2)
        || pn.input.get(2).is_some_and(|s| !s.is_empty());
    attrs.bias = Some(bias);
    let kprod: u64 = kernel.iter().map(|&k| k as u64).product();
    if cin % groups != 0 || cout % groups != 0 {
        return Err(format!(
            "{cin} input and {cout} output channels do not divide into {groups} groups"
        ));
    }
    *macs = if op == "Conv" {
        out_elems * (cin / groups) as u64 * kprod
    } else {
        in_elems * (cout / groups) as u64 * kprod
    };
    *flops = 2 * *macs + if bias { *out_elems } else { 0 };

    Ok(())
}

/// The pads of a convolution or pool (all begins, then all ends): as written, or as its
/// `auto_pad` makes them from the shapes (`SAME_UPPER` puts an odd total's extra pad at the
/// end, `SAME_LOWER` at the start; `VALID` pads nothing), so a file written with `auto_pad`
/// (older converters' `padding="same"`) reads as one written with pads.
fn pads_of(
    pn: &pb::NodeProto,
    d: &Dims,
    kernel: &[usize],
    stride: &[usize],
    dil: &[usize],
) -> Vec<usize> {
    let n = kernel.len();
    let auto = attr(pn, "auto_pad").map_or(&b"NOTSET"[..], |a| a.s.as_slice());
    let shapes_known = d.in0.len() == n + 2 && d.out.len() == n + 2;
    match auto {
        b"VALID" => vec![0; 2 * n],
        b"SAME_UPPER" | b"SAME_LOWER" if shapes_known => {
            let (mut begins, mut ends) = (vec![0; n], vec![0; n]);
            for i in 0..n {
                let (s, dl) =
                    (stride.get(i).copied().unwrap_or(1), dil.get(i).copied().unwrap_or(1));
                let reach = crate::graph::window_reach(d.out[2 + i], kernel[i], s, dl);
                let total = reach.saturating_sub(d.in0[2 + i]);
                let (less, more) = (total / 2, total - total / 2);
                (begins[i], ends[i]) =
                    if auto == b"SAME_UPPER" { (less, more) } else { (more, less) };
            }
            begins.into_iter().chain(ends).collect()
        }
        _ => ints_or(pn, "pads", 0, 2 * n),
    }
}

/// Pools and reductions: kernel, strides, axes; FLOPs per element read. `Ok(false)` when `ctx`'s op is not one of them.
pub(super) fn pooling(ctx: &NodeCtx, d: &Dims, m: &mut Mapped) -> Result<bool, String> {
    let (pn, op) = (ctx.pn, ctx.pn.op_type.as_str());
    let Dims { out_elems, in0, in_elems, .. } = d;
    let Mapped { attrs, flops, .. } = m;
    match op {
        "MaxPool" | "AveragePool" => {
            let spatial = in0.len().saturating_sub(2);
            let kernel = to_usizes(&attr_ints(pn, "kernel_shape"));
            attrs.stride = ints_or(pn, "strides", 1, spatial);
            let dilation = ints_or(pn, "dilations", 1, spatial);
            attrs.padding = pads_of(pn, d, &kernel, &attrs.stride, &dilation);
            if dilation.iter().any(|&x| x != 1) {
                attrs.dilation = dilation; // all ones is the default, whether written or not
            }
            if let Some(c) = attr_int(pn, "count_include_pad") {
                attrs.values.insert("count_include_pad".into(), c as f64);
            }
            *flops = out_elems * kernel.iter().map(|&k| k as u64).product::<u64>();
            attrs.kernel = kernel;
        }
        "GlobalAveragePool" | "GlobalMaxPool" => *flops = *in_elems,
        "Col2Im" => {
            let spatial = d.out.len().saturating_sub(2);
            attrs.kernel = to_usizes(&static_ints_at(ctx, 2).unwrap_or_default());
            attrs.stride = ints_or(pn, "strides", 1, spatial);
            attrs.padding = ints_or(pn, "pads", 0, 2 * spatial);
            let d = to_usizes(&attr_ints(pn, "dilations"));
            if d.iter().any(|&x| x != 1) {
                attrs.dilation = d;
            }
            // every input value is added into its place in the image
            *flops = *in_elems;
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ArgMax"
        | "ArgMin" => {
            attrs.axes = attr_ints(pn, "axes");
            if let Some(a) = attr_int(pn, "axis") {
                attrs.axes = vec![a];
            }
            if let Some(k) = attr_int(pn, "keepdims") {
                attrs.values.insert("keepdims".into(), k as f64);
            }
            *flops = *in_elems;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The shape of the activation at ONNX input `slot`, if that input is an activation.
fn act_shape_at<'c>(ctx: &'c NodeCtx, slot: usize) -> Option<&'c Shape> {
    let p = ctx.act_slots.iter().position(|&s| s == slot)?;
    ctx.in_shapes.get(p)
}

/// The output of an Einsum written without `->`: an ellipsis, then the letters that occur once,
/// in alphabetical order (the ONNX and NumPy rule).
fn implicit_output(lhs: &str) -> String {
    let mut once: Vec<char> = lhs
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .filter(|&c| lhs.matches(c).count() == 1)
        .collect();
    once.sort_unstable();
    let ell = if lhs.contains("...") { "..." } else { "" };
    format!("{ell}{}", once.into_iter().collect::<String>())
}

/// Multiply-accumulates of an `Einsum`: with two or more operands, the product of the sizes of
/// all its indices (each output element sums the products over the contracted ones, as
/// MatMul's `out x K`); one operand (a transpose, a trace, a sum) does none. Sizes come from
/// the activation operands and the output; an ellipsis stands for the broadcast leading dims.
fn einsum_macs(ctx: &NodeCtx) -> Result<u64, String> {
    let eq: String = attr(ctx.pn, "equation")
        .map(|a| String::from_utf8_lossy(&a.s).chars().filter(|c| !c.is_whitespace()).collect())
        .ok_or("Einsum without an equation")?;
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, r.to_string()),
        None => (eq.as_str(), implicit_output(&eq)),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() < 2 {
        return Ok(0);
    }
    let mut size: std::collections::BTreeMap<u32, usize> = Default::default();
    let mut bind = |term: &str, shape: &[usize]| -> Result<(), String> {
        let (pre, post) = term.split_once("...").unwrap_or((term, ""));
        let (pre, post): (Vec<char>, Vec<char>) = (pre.chars().collect(), post.chars().collect());
        let ell = if term.contains("...") {
            shape.len().checked_sub(pre.len() + post.len())
        } else {
            (shape.len() == pre.len()).then_some(0)
        }
        .ok_or_else(|| format!("Einsum term '{term}' does not fit shape {shape:?}"))?;
        let keys = pre
            .iter()
            .map(|&c| c as u32)
            .chain((0..ell).map(|j| 0x11_0000 + (ell - j) as u32)) // ellipsis dims, from the right
            .chain(post.iter().map(|&c| c as u32));
        for (k, &d) in keys.zip(shape) {
            let e = size.entry(k).or_insert(d);
            *e = (*e).max(d); // broadcast: a 1 meets the full size
        }
        Ok(())
    };
    for (slot, term) in terms.iter().enumerate() {
        if let Some(shape) = act_shape_at(ctx, slot) {
            bind(term, shape)?;
        }
    }
    if let Some(out) = ctx.out_shapes.first() {
        bind(&rhs, out)?;
    }
    let letters: std::collections::BTreeSet<char> =
        lhs.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    let mut macs = size.iter().filter(|(k, _)| **k >= 0x11_0000).map(|(_, &d)| d as u64).product();
    for c in letters {
        let d = size.get(&(c as u32)).ok_or_else(|| {
            format!("the size of index '{c}' of Einsum '{eq}' is not known from its activations")
        })?;
        macs *= *d as u64;
    }
    Ok(macs)
}
