//! The dynamic form (`quantize_dynamic`): `DynamicQuantizeLinear` of each activation,
//! `ConvInteger` / `MatMulInteger` on integer weights, a `Cast` of the product to float and a
//! `Mul` by the product of the two scales, and for a convolution an `Add` of its bias.

use super::values::{dequantized, values, Values};
use super::{node, IntProduct, Rewrite};
use tract_onnx::pb;

/// `DynamicQuantizeLinear(x) -> (y, scale, zero_point)`: `y` is `x`; the scale is remembered so
/// that the rescaling `Mul` after the integer product can be dropped.
pub(super) fn dynamic_quantize(rw: &mut Rewrite, n: pb::NodeProto) {
    let x = rw.input(&n, 0).unwrap_or_default();
    if let Some(y) = n.output.first() {
        rw.alias.insert(y.clone(), x);
    }
    if let Some(scale) = n.output.get(1) {
        rw.dyn_scales.insert(scale.clone(), None);
    }
    rw.count("dynamic");
}

/// `ConvInteger` / `MatMulInteger` as `Conv` / `MatMul` of the float input and the weight less
/// its zero point; its scale comes with the rescaling `Mul` ([`after_integer_product`]).
pub(super) fn integer_product(rw: &mut Rewrite, n: pb::NodeProto) {
    let conv = n.op_type == "ConvInteger";
    let (Some(w), Some(out)) = (rw.input(&n, 1), n.output.first().cloned()) else {
        return rw.keep(n);
    };
    let name = format!("{out}/nape_w");
    let (w, weight, axis) = if let Some(dims) = rw.int_inputs.get(&w).cloned() {
        // known by its shape only: a float weight of that shape, nothing to scale
        (rw.declare(name, dims), None, 0)
    } else {
        let Some(q) = rw.consts.get(&w).and_then(values) else { return rw.keep(n) };
        let zp = rw.constant(&n, 3);
        let axis = if conv { 0 } else { q.dims.len().saturating_sub(1) };
        let len = zp.as_ref().map_or(1, |z| z.data.len());
        let ones = Values { dims: vec![1], data: vec![1.0; len] };
        let Some(data) = dequantized(&q, &ones, zp.as_ref(), axis as i64) else {
            return rw.keep(n);
        };
        (rw.weight(name, q.dims, &data), Some(rw.weights.len()), axis)
    };
    let x = rw.input(&n, 0).unwrap_or_default();
    let op = if conv { "Conv" } else { "MatMul" };
    let mut f = node(op, &n.name, vec![x, w], vec![out.clone()]);
    f.attribute = n.attribute;
    let at = rw.emit(f);
    let weight = weight.map(|len| len - 1);
    rw.int_outputs.insert(out, IntProduct { weight, axis, node: at });
    rw.count("dynamic");
}

/// What follows an integer product: its `Cast` to float (dropped), the `Mul` by the product of
/// the scales (dropped, the weight's scale moved into the weight), and for a convolution the
/// `Add` of a reshaped bias (moved into the `Conv`). Anything else is kept.
pub(super) fn after_integer_product(rw: &mut Rewrite, n: pb::NodeProto) {
    let (Some(a), b) = (rw.input(&n, 0), rw.input(&n, 1)) else { return rw.keep(n) };
    let out = n.output.first().cloned().unwrap_or_default();
    let product = |x: &String| rw.int_outputs.get(x).copied();
    match (n.op_type.as_str(), b) {
        ("Cast", _) if product(&a).is_some() => {
            rw.alias.insert(out, a);
        }
        ("Mul", Some(b)) if rw.dyn_scales.contains_key(&a) || rw.dyn_scales.contains_key(&b) => {
            let (scale, other) = if rw.dyn_scales.contains_key(&a) { (a, b) } else { (b, a) };
            if let Some(c) = rw.consts.get(&other).and_then(values) {
                rw.dyn_scales.insert(out, Some(c));
            } else if let Some(p) = product(&other) {
                if let (Some(Some(c)), Some(w)) = (rw.dyn_scales.get(&scale), p.weight) {
                    scale_weight(&mut rw.weights[w], c, p.axis);
                }
                rw.alias.insert(out, other);
            } else {
                rw.keep(n);
            }
        }
        ("Add", Some(b)) => match (product(&a), rw.reshaped.get(&b).cloned()) {
            (Some(p), Some(bias))
                if rw.out[p.node].op_type == "Conv" && rw.out[p.node].input.len() == 2 =>
            {
                rw.out[p.node].input.push(bias);
                rw.alias.insert(out, a);
            }
            _ => rw.keep(n),
        },
        _ => rw.keep(n),
    }
}

/// Multiplies a float weight by a factor per tensor or along `axis` (its output channels).
fn scale_weight(t: &mut pb::TensorProto, c: &Values, axis: usize) {
    let Some(w) = values(t) else { return };
    let c = Values { dims: vec![c.data.len() as i64], data: c.data.clone() };
    if let Some(data) = dequantized(&w, &c, None, axis as i64) {
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
}
