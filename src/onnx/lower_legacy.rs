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
    let mut b = Builder { base: base.to_string(), opset, nodes: vec![], inits: vec![] };
    let (x, y) = (n.input[0].clone(), n.output[0].clone());
    match n.op_type.as_str() {
        "ImageScaler" => {
            let bias = floats_attr(n, "bias");
            let scaled = if bias.is_empty() { y.clone() } else { b.name("scaled") };
            let s = b.constant("scale", vec![], vec![float_attr(n, "scale", 1.0)]);
            b.op("Mul", vec![x, s], &scaled);
            if !bias.is_empty() {
                let c = b.constant("bias", vec![1, bias.len() as i64, 1, 1], bias);
                b.op("Add", vec![scaled, c], &y);
            }
        }
        "Scale" => {
            let s = b.constant("scale", vec![], vec![float_attr(n, "scale", 1.0)]);
            b.op("Mul", vec![x, s], &y);
        }
        "Crop" => crop(&mut b, n, x, &y),
        "MeanVarianceNormalization" => {
            let axes =
                Some(ints_attr(n, "axes")).filter(|a| !a.is_empty()).unwrap_or(vec![0, 2, 3]);
            let mean = b.reduce("ReduceMean", x.clone(), &axes, "mean");
            let sq = b.fresh_op("Mul", vec![x.clone(), x.clone()], "sq");
            let mean_sq = b.reduce("ReduceMean", sq, &axes, "mean_sq");
            let sq_mean = b.fresh_op("Mul", vec![mean.clone(), mean.clone()], "sq_mean");
            let var = b.fresh_op("Sub", vec![mean_sq, sq_mean], "var");
            let std = b.fresh_op("Sqrt", vec![var], "std");
            let eps = b.constant("eps", vec![], vec![1e-9]);
            let den = b.fresh_op("Add", vec![std, eps], "den");
            let num = b.fresh_op("Sub", vec![x, mean], "centred");
            b.op("Div", vec![num, den], &y);
        }
        _ => {
            // LpNormalization
            let axis = n.attribute.iter().find(|a| a.name == "axis").map_or(-1, |a| a.i);
            let p = n.attribute.iter().find(|a| a.name == "p").map_or(2, |a| a.i);
            let norm = if p == 1 {
                let abs = b.fresh_op("Abs", vec![x.clone()], "abs");
                b.reduce("ReduceSum", abs, &[axis], "norm")
            } else {
                let sq = b.fresh_op("Mul", vec![x.clone(), x.clone()], "sq");
                let sum = b.reduce("ReduceSum", sq, &[axis], "sum");
                b.fresh_op("Sqrt", vec![sum], "norm")
            };
            b.op("Div", vec![x, norm], &y);
        }
    }
    (b.nodes, b.inits)
}

/// `Crop` as a `Slice` of axes 2 and 3: from (top, left) to `border`'s (bottom, right) from the
/// end, or over `scale`'s (height, width) when it is given.
fn crop(b: &mut Builder, n: &pb::NodeProto, x: String, y: &str) {
    let border = ints_attr(n, "border");
    let at = |i: usize| border.get(i).copied().unwrap_or(0);
    let (left, top, right, bottom) = (at(0), at(1), at(2), at(3));
    let starts = vec![top, left];
    let ends = match ints_attr(n, "scale")[..] {
        [h, w] => vec![top + h, left + w],
        _ => [bottom, right].iter().map(|&e| if e > 0 { -e } else { i64::MAX }).collect(),
    };
    let mut slice = pb::NodeProto {
        op_type: "Slice".into(),
        name: b.name("Slice_0"),
        input: vec![x],
        output: vec![y.to_string()],
        ..Default::default()
    };
    let axes = vec![2, 3];
    if b.opset >= 10 {
        for (what, v) in [("starts", starts), ("ends", ends), ("axes", axes)] {
            let t = b.ints(what, v);
            slice.input.push(t);
        }
    } else {
        for (what, v) in [("starts", starts), ("ends", ends), ("axes", axes)] {
            slice.attribute.push(ints_attribute(what, v));
        }
    }
    b.nodes.push(slice);
}

/// Writes the rewritten nodes and their constants, each named under `base`.
struct Builder {
    base: String,
    opset: i64,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

impl Builder {
    fn name(&self, what: &str) -> String {
        format!("{}/{what}", self.base)
    }

    /// A node of `op` writing `out`.
    fn op(&mut self, op: &str, input: Vec<String>, out: &str) {
        let name = format!("{}/{op}_{}", self.base, self.nodes.len());
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input,
            output: vec![out.to_string()],
            ..Default::default()
        });
    }

    /// A node of `op` writing a new tensor named `what`; its name.
    fn fresh_op(&mut self, op: &str, input: Vec<String>, what: &str) -> String {
        let out = self.name(what);
        self.op(op, input, &out);
        out
    }

    /// A reduction over `axes` keeping its dims (axes an attribute before the opset that made
    /// them an input: 13 for `ReduceSum`, 18 for the others); its output's name.
    fn reduce(&mut self, op: &str, x: String, axes: &[i64], what: &str) -> String {
        let out = self.fresh_op(op, vec![x], what);
        let as_input = self.opset >= if op == "ReduceSum" { 13 } else { 18 };
        let axes_input = as_input.then(|| self.ints(&format!("{what}_axes"), axes.to_vec()));
        let node = self.nodes.last_mut().expect("just pushed");
        node.attribute.push(pb::AttributeProto {
            name: "keepdims".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        });
        match axes_input {
            Some(t) => node.input.push(t),
            None => node.attribute.push(ints_attribute("axes", axes.to_vec())),
        }
        out
    }

    /// A float constant, as a `Constant` node: the op's attributes, not trained parameters
    /// (docs/costs.md counts no `Constant` node's values); its name.
    fn constant(&mut self, what: &str, dims: Vec<i64>, values: Vec<f32>) -> String {
        let name = self.name(what);
        let t = pb::TensorProto { dims, data_type: 1, float_data: values, ..Default::default() };
        self.nodes.push(pb::NodeProto {
            op_type: "Constant".into(),
            name: format!("{name}_constant"),
            output: vec![name.clone()],
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                t: Some(t),
                ..Default::default()
            }],
            ..Default::default()
        });
        name
    }

    /// An int64 vector constant; its name.
    fn ints(&mut self, what: &str, values: Vec<i64>) -> String {
        let name = self.name(what);
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: 7,
            int64_data: values,
            ..Default::default()
        });
        name
    }
}

fn ints_attribute(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

fn ints_attr(n: &pb::NodeProto, name: &str) -> Vec<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn floats_attr(n: &pb::NodeProto, name: &str) -> Vec<f32> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.floats.clone()).unwrap_or_default()
}

fn float_attr(n: &pb::NodeProto, name: &str, default: f32) -> f32 {
    n.attribute.iter().find(|a| a.name == name).map_or(default, |a| a.f)
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
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let dims = [1, 4, 6, 6]
            .map(|d| Dimension { value: Some(Value::DimValue(d)), ..Default::default() });
        let x = pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim: dims.to_vec() }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
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
