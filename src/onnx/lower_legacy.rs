//! The older and experimental ops that files of the Caffe and Caffe2 era carry (the ONNX model
//! zoo's Tiny YOLOv2, converters of opsets 1-9), rewritten as the compositions of ops nape
//! reads, as their definitions in the ONNX operator docs give them:
//! - `ImageScaler(x) = x * scale + bias` (a bias per channel), `Scale(x) = x * scale`;
//! - `Crop(x)`: a `Slice` of the spatial axes, by `border` (left, top, right, bottom), or from
//!   its top-left border over `scale` (height, width);
//! - `MeanVarianceNormalization(x) = (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)` over `axes`
//!   (default 0, 2, 3), the function body of the standard;
//! - `LpNormalization(x) = x / ||x||_p` along `axis` (p 1 or 2).
//!
//! So the input normalization an `ImageScaler` is reads as any other (`Cg::canonical` leaves
//! it out, as it leaves out Keras' `Rescaling`), and the executor runs them all.

use super::map::{attr_int, attr_ints};
use super::rewrite::{attr_ints as ints_attribute, float_attr, floats_attr, Out};
use tract_onnx::pb;

/// Whether `op` is one of the ops this module rewrites.
pub(super) fn is_legacy(op: &str) -> bool {
    matches!(op, "ImageScaler" | "Scale" | "Crop" | "MeanVarianceNormalization" | "LpNormalization")
}

/// The nodes and constants that compute node `n` (named under `base`), for a model of `opset`.
pub(super) fn lower(
    n: &pb::NodeProto,
    opset: i64,
    base: &str,
) -> (Vec<pb::NodeProto>, Vec<pb::TensorProto>) {
    let mut out = Out::new(opset, base.to_string());
    let (x, y) = (n.input[0].clone(), n.output[0].clone());
    match n.op_type.as_str() {
        "ImageScaler" => {
            let bias = floats_attr(n, "bias");
            let s = out.constant(&[], &[float_attr(n, "scale", 1.0)]);
            if bias.is_empty() {
                out.op_to("Mul", vec![x, s], vec![], &y);
            } else {
                let scaled = out.op("Mul", vec![x, s], vec![]);
                let c = out.constant(&[1, bias.len() as i64, 1, 1], &bias);
                out.op_to("Add", vec![scaled, c], vec![], &y);
            }
        }
        "Scale" => {
            let s = out.constant(&[], &[float_attr(n, "scale", 1.0)]);
            out.op_to("Mul", vec![x, s], vec![], &y);
        }
        "Crop" => crop(&mut out, n, x, &y),
        "MeanVarianceNormalization" => {
            let axes =
                Some(attr_ints(n, "axes")).filter(|a| !a.is_empty()).unwrap_or(vec![0, 2, 3]);
            let mean = out.reduce("ReduceMean", x.clone(), &axes);
            let sq = out.op("Mul", vec![x.clone(), x.clone()], vec![]);
            let mean_sq = out.reduce("ReduceMean", sq, &axes);
            let sq_mean = out.op("Mul", vec![mean.clone(), mean.clone()], vec![]);
            let var = out.op("Sub", vec![mean_sq, sq_mean], vec![]);
            let std = out.op("Sqrt", vec![var], vec![]);
            let eps = out.floats(&[], &[1e-9]);
            let den = out.op("Add", vec![std, eps], vec![]);
            let num = out.op("Sub", vec![x, mean], vec![]);
            out.op_to("Div", vec![num, den], vec![], &y);
        }
        _ => {
            // LpNormalization
            let axis = attr_int(n, "axis").unwrap_or(-1);
            let norm = if attr_int(n, "p").unwrap_or(2) == 1 {
                let abs = out.op("Abs", vec![x.clone()], vec![]);
                out.reduce("ReduceSum", abs, &[axis])
            } else {
                let sq = out.op("Mul", vec![x.clone(), x.clone()], vec![]);
                let sum = out.reduce("ReduceSum", sq, &[axis]);
                out.op("Sqrt", vec![sum], vec![])
            };
            out.op_to("Div", vec![x, norm], vec![], &y);
        }
    }
    (out.nodes, out.inits)
}

/// `Crop` as a `Slice` of axes 2 and 3: from (top, left) to `border`'s (bottom, right) from the
/// end, or over `scale`'s (height, width) when it is given; its bounds inputs from opset 10,
/// attributes before.
fn crop(out: &mut Out, n: &pb::NodeProto, x: String, y: &str) {
    let border = attr_ints(n, "border");
    let at = |i: usize| border.get(i).copied().unwrap_or(0);
    let (left, top, right, bottom) = (at(0), at(1), at(2), at(3));
    let starts = [top, left];
    let ends: Vec<i64> = match attr_ints(n, "scale")[..] {
        [h, w] => vec![top + h, left + w],
        _ => [bottom, right].iter().map(|&e| if e > 0 { -e } else { i64::MAX }).collect(),
    };
    let bounds = [("starts", &starts[..]), ("ends", &ends[..]), ("axes", &[2, 3][..])];
    if out.opset >= 10 {
        let mut input = vec![x];
        input.extend(bounds.iter().map(|(_, v)| out.ints(v)));
        out.op_to("Slice", input, vec![], y);
    } else {
        let attrs = bounds.iter().map(|(name, v)| ints_attribute(name, v)).collect();
        out.op_to("Slice", vec![x], attrs, y);
    }
}

#[cfg(test)]
mod tests {
    use crate::onnx::{load_bytes, ImportOptions};
    use prost::Message;
    use tract_onnx::pb;

    /// A model of one `op` node on a `[1, 4, 6, 6]` input at `opset`, as loaded (`--strict`).
    fn load(
        op: &str,
        attrs: Vec<pb::AttributeProto>,
        opset: i64,
    ) -> crate::Result<crate::graph::Cg> {
        let x = crate::onnx::lower::tests::value("x", &[1, 4, 6, 6]);
        let n = pb::NodeProto {
            op_type: op.into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            attribute: attrs,
            ..Default::default()
        };
        let y = pb::ValueInfoProto { name: "y".into(), ..Default::default() };
        let graph =
            pb::GraphProto { node: vec![n], input: vec![x], output: vec![y], ..Default::default() };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: opset }],
            graph: Some(graph),
            ..Default::default()
        };
        load_bytes(
            &model.encode_to_vec(),
            "m.onnx",
            &ImportOptions { strict: true, ..Default::default() },
        )
    }

    fn out_shape(cg: &crate::graph::Cg) -> Vec<usize> {
        let last = cg.nodes().filter(|(_, n)| n.kind != crate::graph::OpKind::Output).last();
        last.map(|(_, n)| n.out_shape().to_vec()).unwrap_or_default()
    }

    /// Where the reductions take their axes as an input (`ReduceSum` from opset 13, `ReduceMean`
    /// from 18) and where as an attribute, and `Crop`'s `Slice` by inputs or by attributes:
    /// each loads, shapes inferred, at both opsets.
    #[test]
    fn each_op_reads_at_old_and_new_opsets() {
        let ints = |name: &str, v: Vec<i64>| pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: v,
            ..Default::default()
        };
        let p1 = pb::AttributeProto {
            name: "p".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        };
        for opset in [9, 18] {
            let mvn = load("MeanVarianceNormalization", vec![], opset).expect("mvn");
            assert_eq!(out_shape(&mvn), [1, 4, 6, 6], "opset {opset}");
            let lp = load("LpNormalization", vec![p1.clone()], opset).expect("lp");
            assert_eq!(out_shape(&lp), [1, 4, 6, 6], "opset {opset}");
            let crop = load("Crop", vec![ints("border", vec![1, 2, 0, 1])], opset).expect("crop");
            assert_eq!(out_shape(&crop), [1, 4, 3, 5], "opset {opset}");
            let by_scale = vec![ints("border", vec![1, 1, 0, 0]), ints("scale", vec![2, 3])];
            assert_eq!(out_shape(&load("Crop", by_scale, opset).expect("crop")), [1, 4, 2, 3]);
        }
    }
}
