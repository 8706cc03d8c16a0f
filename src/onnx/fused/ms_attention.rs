//! ONNX Runtime's attentions (com.microsoft) as the ops that define them: `MultiHeadAttention`
//! on given query, key and value (3-D), and `Attention` with the QKV projection packed inside
//! (`input · weights + bias`, split into query, key and value), each then attention as ONNX's
//! 3-D `Attention` reads (`super::attention`), with a key padding mask or a raw 2-D mask as
//! `(1 - mask) * mask_filter_value` added to the scores.

use super::attention::{heads_attention, Heads};
use super::{float_attr, has_output, input, int_attr, Declared, Out};
use tract_onnx::pb;

/// ONNX Runtime's default value for masked scores.
const MASK_FILTER: f32 = -10000.0;

/// `MultiHeadAttention(query, key, value, bias, key_padding_mask)`; `None` for packed query or
/// key forms (not 3-D), an attention bias, a KV cache or a mask that is not 2-D.
pub(super) fn multi_head(n: &pb::NodeProto, out: &mut Out, d: &Declared, y: &str) -> Option<()> {
    let (q, k, v) = (input(n, 0)?, input(n, 1)?, input(n, 2)?);
    // a rank the file does not declare is taken as 3: the packed forms leave key or value out
    let three_d = [&q, &k, &v].iter().all(|x| d.rank(x).is_none_or(|r| r == 3));
    if !three_d || (5..n.input.len()).any(|i| input(n, i).is_some()) || extra_outputs(n) {
        return None;
    }
    let (q, k, v) = match input(n, 3) {
        Some(bias) => biased(out, [q, k, v], bias)?,
        None => (q, k, v),
    };
    let mask = match input(n, 4) {
        Some(m) => Some(padding_mask(out, n, m, d)?),
        None => None,
    };
    heads_attention(out, d, heads(n, mask)?, [q, k, v], y)
}

/// `Attention(input, weights, bias, mask_index)`; `None` for a KV cache, rotary embeddings, an
/// attention bias, or a mask index that is not a raw 2-D mask.
pub(super) fn packed(n: &pb::NodeProto, out: &mut Out, d: &Declared, y: &str) -> Option<()> {
    let cached = (4..n.input.len()).any(|i| input(n, i).is_some());
    if cached || extra_outputs(n) || int_attr(n, "do_rotary").unwrap_or(0) != 0 {
        return None;
    }
    let (x, w) = (input(n, 0)?, input(n, 1)?);
    let sizes = n.attribute.iter().find(|a| a.name == "qkv_hidden_sizes").map(|a| a.ints.clone());
    let qkv = out.op("MatMul", vec![x, w], vec![]);
    let qkv = match input(n, 2) {
        Some(b) => out.op("Add", vec![qkv, b], vec![]),
        None => qkv,
    };
    let [q, k, v] = split3(out, qkv, sizes.as_deref())?;
    let mask = match input(n, 3) {
        Some(m) => Some(padding_mask(out, n, m, d)?),
        None => None,
    };
    heads_attention(out, d, heads(n, mask)?, [q, k, v], y)
}

fn extra_outputs(n: &pb::NodeProto) -> bool {
    (1..n.output.len()).any(|i| has_output(n, i))
}

/// The heads, the scale and causality the node's attributes give, with `mask`.
fn heads(n: &pb::NodeProto, mask: Option<String>) -> Option<Heads> {
    let scale = n.attribute.iter().find(|a| a.name == "scale").map(|a| a.f).filter(|s| *s != 0.0);
    Some(Heads {
        q: int_attr(n, "num_heads")?,
        kv: int_attr(n, "num_heads")?,
        scale,
        causal: int_attr(n, "unidirectional").unwrap_or(0) != 0,
        mask,
    })
}

/// The projections' bias, `[Dq + Dk + Dv]`, split and added to query, key and value (equal
/// widths: the bias is split in thirds).
fn biased(out: &mut Out, qkv: [String; 3], bias: String) -> Option<(String, String, String)> {
    let [bq, bk, bv] = split3(out, bias, None)?;
    let [q, k, v] = qkv;
    let q = out.op("Add", vec![q, bq], vec![]);
    let k = out.op("Add", vec![k, bk], vec![]);
    let v = out.op("Add", vec![v, bv], vec![]);
    Some((q, k, v))
}

/// `x` split along its last axis in three: at `sizes`, or in equal parts.
fn split3(out: &mut Out, x: String, sizes: Option<&[i64]>) -> Option<[String; 3]> {
    let names = [out.name("q"), out.name("k"), out.name("v")];
    let mut attrs = vec![super::attr_i("axis", -1)];
    let mut inputs = vec![x];
    match sizes {
        Some(s) if s.len() == 3 && out.opset >= 13 => inputs.push(out.ints(s)),
        Some(s) if s.len() == 3 => attrs.push(super::attr_ints("split", s)),
        Some(_) => return None,
        None if out.opset >= 18 => attrs.push(super::attr_i("num_outputs", 3)),
        None => {}
    }
    out.op_n("Split", inputs, attrs, &names);
    Some(names)
}

/// A raw `[B, L]` mask (1: attend, 0: padding) as the additive bias of `[B, 1, 1, L]` scores:
/// `(1 - mask) * mask_filter_value`. `None` for other mask forms (lengths, 3-D, 4-D).
fn padding_mask(out: &mut Out, n: &pb::NodeProto, m: String, d: &Declared) -> Option<String> {
    if d.rank(&m) != Some(2) {
        return None;
    }
    let f = out.op("Cast", vec![m], vec![super::attr_i("to", 1)]);
    let one = out.floats(&[], &[1.0]);
    let pad = out.op("Sub", vec![one, f], vec![]);
    let fill = out.floats(&[], &[float_attr(n, "mask_filter_value", MASK_FILTER)]);
    let bias = out.op("Mul", vec![pad, fill], vec![]);
    let shape = out.ints(&[0, 1, 1, -1]);
    Some(out.op("Reshape", vec![bias, shape], vec![]))
}
