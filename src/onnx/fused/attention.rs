//! ONNX's `Attention` (opset 23) as the scaled dot-product attention PyTorch's exporters write
//! at lower opsets: `softmax(Q s · (Kᵀ s) + mask) · V`, with `s` the square root of the scale
//! (`1 / sqrt(head size)` unless given) on both sides, the causal mask aligned top-left, and the
//! 3-D form split into heads and merged back around it; ONNX Runtime's attentions
//! (`super::ms_attention`) end in the same.

use super::super::rewrite::attr_value;
use super::{attr_i, attr_ints, float_attr, has_output, input, int_attr, Declared, Out};
use tract_onnx::pb;

/// ONNX's element type of booleans.
const BOOL: i32 = 9;

/// The heads of the 3-D forms, the scale (default `1 / sqrt(head size)`), causality and the
/// additive mask.
pub(super) struct Heads {
    pub q: i64,
    pub kv: i64,
    pub scale: Option<f32>,
    pub causal: bool,
    pub mask: Option<String>,
}

/// Writes the expansion of `n` into `out`, its result named `y`; `None` for a form it does not
/// read: a KV cache (past inputs, present outputs), the scores output, a soft cap. Grouped-query
/// attention is read where the heads are known: the 3-D form's attributes, or the 4-D inputs'
/// declared dims.
pub(super) fn attention(n: &pb::NodeProto, out: &mut Out, d: &Declared, y: &str) -> Option<()> {
    let cached = (4..n.input.len()).any(|i| input(n, i).is_some());
    let more_out = (1..n.output.len()).any(|i| has_output(n, i));
    let mode = int_attr(n, "qk_matmul_output_mode").unwrap_or(0);
    if cached || more_out || mode != 0 || float_attr(n, "softcap", 0.0) != 0.0 {
        return None;
    }
    let qkv = [input(n, 0)?, input(n, 1)?, input(n, 2)?];
    let scale = n.attribute.iter().find(|a| a.name == "scale").map(|a| a.f);
    let causal = int_attr(n, "is_causal").unwrap_or(0) != 0;
    let mask =
        input(n, 3).map(|m| if d.elem.get(&m) == Some(&BOOL) { additive(out, m) } else { m });
    match (int_attr(n, "q_num_heads"), int_attr(n, "kv_num_heads")) {
        (Some(q), Some(kv)) => {
            heads_attention(out, d, Heads { q, kv, scale, causal, mask }, qkv, y)
        }
        (None, None) => match (d.dim(&qkv[0], 1), d.dim(&qkv[1], 1)) {
            (Some(q), Some(kv)) if q != kv => {
                grouped(out, d, Heads { q, kv, scale, causal, mask }, qkv, y)
            }
            _ => {
                attend(out, qkv, scale, mask, causal, 4, y);
                Some(())
            }
        },
        _ => None,
    }
}

/// Grouped-query attention on `[B, Hq, S, D]` queries and `[B, Hkv, L, D]` keys and values
/// (each key/value head serves `Hq / Hkv` consecutive query heads, as PyTorch's `enable_gqa`
/// and ONNX define it): the queries as `[B, Hkv, G, S, D]`, the keys and values with a group
/// axis of 1 that the products broadcast, and the result back as `[B, Hq, S, Dv]`. `None`
/// when the heads do not divide, or for a mask other than `[S, L]` or `[B, 1, S, L]`.
fn grouped(out: &mut Out, d: &Declared, h: Heads, [q, k, v]: [String; 3], y: &str) -> Option<()> {
    if h.kv <= 0 || h.q % h.kv != 0 {
        return None;
    }
    let mask = match h.mask {
        Some(m) if d.rank(&m) == Some(4) && d.dim(&m, 1) == Some(1) => {
            let axis = out.ints(&[2]);
            Some(out.op("Unsqueeze", vec![m, axis], vec![]))
        }
        Some(m) if d.rank(&m).is_some_and(|r| r <= 2) => Some(m),
        Some(_) => return None,
        None => None,
    };
    let batch = dims(out, &q, &[0]);
    let groups = out.ints(&[h.kv, h.q / h.kv]);
    let rows = dims(out, &q, &[2, 3]);
    let shape = out.op("Concat", vec![batch, groups, rows], vec![attr_i("axis", 0)]);
    let q5 = out.op("Reshape", vec![q.clone(), shape], vec![]);
    let axis = out.ints(&[2]);
    let k5 = out.op("Unsqueeze", vec![k, axis.clone()], vec![]);
    let v5 = out.op("Unsqueeze", vec![v.clone(), axis], vec![]);
    let o = out.name("attended");
    attend(out, [q5, k5, v5], h.scale, mask, h.causal, 5, &o);
    let (lead, width) = (dims(out, &q, &[0, 1, 2]), dims(out, &v, &[3]));
    let shape = out.op("Concat", vec![lead, width], vec![attr_i("axis", 0)]);
    out.op_to("Reshape", vec![o, shape], vec![], y);
    Some(())
}

/// Attention on 3-D `[B, S, H * D]` query, key and value: split into heads, attended (grouped
/// where the key/value heads are fewer), merged back into `y`; `None` when they do not divide.
pub(super) fn heads_attention(
    out: &mut Out,
    d: &Declared,
    h: Heads,
    [q, k, v]: [String; 3],
    y: &str,
) -> Option<()> {
    let qkv = [split_heads(out, q, h.q), split_heads(out, k, h.kv), split_heads(out, v, h.kv)];
    let o = out.name("attended");
    if h.q != h.kv {
        grouped(out, d, h, qkv, &o)?;
    } else {
        attend(out, qkv, h.scale, h.mask, h.causal, 4, &o);
    }
    let o = out.op("Transpose", vec![o], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let shape = out.ints(&[0, 0, -1]);
    out.op_to("Reshape", vec![o, shape], vec![], y);
    Some(())
}

/// `softmax(Q s · (Kᵀ s) + mask + causal) · V` on `[B, H, S, D]` tensors (`rank` 4) or
/// grouped `[B, Hkv, G, S, D]` ones (5), into `y`.
#[allow(clippy::too_many_arguments)]
fn attend(
    out: &mut Out,
    [q, k, v]: [String; 3],
    scale: Option<f32>,
    mask: Option<String>,
    causal: bool,
    rank: i64,
    y: &str,
) {
    let s = root_scale(out, scale, &q);
    let perm: Vec<i64> = (0..rank - 2).chain([rank - 1, rank - 2]).collect();
    let kt = out.op("Transpose", vec![k.clone()], vec![attr_ints("perm", &perm)]);
    let qs = out.op("Mul", vec![q.clone(), s.clone()], vec![]);
    let ks = out.op("Mul", vec![kt, s], vec![]);
    let mut scores = out.op("MatMul", vec![qs, ks], vec![]);
    if let Some(bias) = mask {
        scores = out.op("Add", vec![scores, bias], vec![]);
    }
    if causal {
        let bias = causal_mask(out, &q, &k);
        scores = out.op("Add", vec![scores, bias], vec![]);
    }
    let p = out.op("Softmax", vec![scores], vec![attr_i("axis", -1)]);
    out.op_to("MatMul", vec![p, v], vec![], y);
}

/// `[B, S, H * D]` as `[B, H, S, D]`.
fn split_heads(out: &mut Out, x: String, heads: i64) -> String {
    let shape = out.ints(&[0, 0, heads, -1]);
    let r = out.op("Reshape", vec![x, shape], vec![]);
    out.op("Transpose", vec![r], vec![attr_ints("perm", &[0, 2, 1, 3])])
}

/// The square root of the scale, applied to both the query and the keys: `sqrt(scale)`, or
/// `D^(-1/4)` from the query's head size `D` (a shape computation, folded to a constant).
fn root_scale(out: &mut Out, scale: Option<f32>, q: &str) -> String {
    if let Some(s) = scale {
        return out.floats(&[1], &[s.sqrt()]);
    }
    let d = dim(out, q, -1);
    let d = out.op("Cast", vec![d], vec![attr_i("to", 1)]);
    let p = out.floats(&[], &[-0.25]);
    out.op("Pow", vec![d, p], vec![])
}

/// Dim `axis` of `x` as a 1-D tensor (`Shape` then `Gather`, which every opset reads alike).
fn dim(out: &mut Out, x: &str, axis: i64) -> String {
    dims(out, x, &[axis])
}

/// Dims `axes` of `x` as a 1-D tensor.
fn dims(out: &mut Out, x: &str, axes: &[i64]) -> String {
    let shape = out.op("Shape", vec![x.to_string()], vec![]);
    let at = out.ints(axes);
    out.op("Gather", vec![shape, at], vec![attr_i("axis", 0)])
}

/// A boolean mask (true: attend) as the additive one: 0 where true, -inf where false.
fn additive(out: &mut Out, mask: String) -> String {
    let zero = out.floats(&[], &[0.0]);
    let ninf = out.floats(&[], &[f32::NEG_INFINITY]);
    out.op("Where", vec![mask, zero, ninf], vec![])
}

/// The causal mask of `[S, L]` scores, aligned top-left as ONNX defines it: 0 on and below the
/// diagonal, -inf above (computed from the shapes, so folded to a constant).
fn causal_mask(out: &mut Out, q: &str, k: &str) -> String {
    let (s, l) = (dim(out, q, -2), dim(out, k, -2));
    let sl = out.op("Concat", vec![s, l], vec![attr_i("axis", 0)]);
    let ones = out.op("ConstantOfShape", vec![sl], vec![attr_value(&[1], &[1.0])]);
    let lower = out.op("Trilu", vec![ones], vec![attr_i("upper", 0)]);
    let keep = out.op("Cast", vec![lower], vec![attr_i("to", i64::from(BOOL))]);
    additive(out, keep)
}
