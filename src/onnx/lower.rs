//! Rewrites a few ONNX ops into the exact compositions of ops nape already knows, before tract
//! reads the model, so the rest of the pipeline (shapes, costs, execution) needs nothing new:
//! `ReduceL2(x) = Sqrt(ReduceSum(x * x))` (Swin V2's cosine attention), `ReduceSumSquare(x) =
//! ReduceSum(x * x)`, `ReduceL1(x) = ReduceSum(Abs(x))`, `IsNaN(x) = Not(Equal(x, x))`
//! (Hugging Face's attention masking); and the Caffe-era ops of `lower_legacy.rs`.

use tract_onnx::pb;

/// The default-domain opset the model imports (0 when it names none).
pub(super) fn opset(model: &pb::ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0)
}

fn node(op: &str, name: String, input: Vec<String>, output: Vec<String>) -> pb::NodeProto {
    pb::NodeProto { op_type: op.into(), name, input, output, ..Default::default() }
}

/// Rewrites the ops listed in the module documentation, in place.
pub(super) fn lower(model: &mut pb::ModelProto) {
    let opset = opset(model);
    let Some(graph) = model.graph.as_mut() else { return };
    if !graph.node.iter().any(|n| is_lowered(&n.op_type)) {
        return;
    }
    let mut nodes = Vec::with_capacity(graph.node.len() + 8);
    let mut extra_inits = Vec::new();
    for (i, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if !is_lowered(&n.op_type) || n.input.is_empty() || n.output.len() != 1 {
            nodes.push(n);
            continue;
        }
        let base = if n.name.is_empty() { format!("nape_lowered_{i}") } else { n.name.clone() };
        let t = |s: &str| format!("{base}/{s}");
        if super::lower_legacy::is_legacy(&n.op_type) {
            let (more, inits) = super::lower_legacy::lower(&n, opset, &base);
            nodes.extend(more);
            extra_inits.extend(inits);
            continue;
        }
        let x = n.input[0].clone();
        let y = n.output[0].clone();
        if n.op_type == "IsNaN" {
            nodes.push(node("Equal", t("Equal"), vec![x.clone(), x], vec![t("eq")]));
            nodes.push(node("Not", t("Not"), vec![t("eq")], vec![y]));
            continue;
        }
        let inner = if n.op_type == "ReduceL1" {
            nodes.push(node("Abs", t("Abs"), vec![x], vec![t("abs")]));
            t("abs")
        } else {
            nodes.push(node("Mul", t("Square"), vec![x.clone(), x], vec![t("sq")]));
            t("sq")
        };
        let sum_out = if n.op_type == "ReduceL2" { t("sum") } else { y.clone() };
        let mut sum = node("ReduceSum", t("ReduceSum"), vec![inner], vec![sum_out.clone()]);
        sum.attribute = n.attribute.iter().filter(|a| a.name != "axes").cloned().collect();
        let axes_attr = n.attribute.iter().find(|a| a.name == "axes");
        if let Some(axes) = n.input.get(1).filter(|a| !a.is_empty()) {
            sum.input.push(axes.clone()); // opset 18: axes already an input
        } else if let Some(a) = axes_attr {
            if opset >= 13 {
                extra_inits.push(pb::TensorProto {
                    name: t("axes"),
                    dims: vec![a.ints.len() as i64],
                    data_type: 7,
                    int64_data: a.ints.clone(),
                    ..Default::default()
                });
                sum.input.push(t("axes"));
            } else {
                sum.attribute.push(a.clone());
            }
        }
        nodes.push(sum);
        if n.op_type == "ReduceL2" {
            nodes.push(node("Sqrt", t("Sqrt"), vec![sum_out], vec![y]));
        }
    }
    graph.node = nodes;
    graph.initializer.extend(extra_inits);
}

fn is_lowered(op: &str) -> bool {
    matches!(op, "ReduceL2" | "ReduceL1" | "ReduceSumSquare" | "IsNaN")
        || super::lower_legacy::is_legacy(op)
}

#[cfg(test)]
pub(super) mod tests {
    use crate::onnx::{load_bytes, ImportOptions};
    use prost::Message;
    use tract_onnx::pb;

    /// A float input of shape `dims` (also for `lower_legacy`'s tests).
    pub(in crate::onnx) fn value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let dim = dims
            .iter()
            .map(|&d| Dimension { value: Some(Value::DimValue(d)), ..Default::default() });
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim: dim.collect() }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn model(op: &str, out: &[i64]) -> Vec<u8> {
        let mut n = super::node(op, "r".into(), vec!["x".into()], vec!["y".into()]);
        if op.starts_with("Reduce") {
            n.attribute.push(pb::AttributeProto {
                name: "axes".into(),
                r#type: pb::attribute_proto::AttributeType::Ints as i32,
                ints: vec![1],
                ..Default::default()
            });
        }
        let graph = pb::GraphProto {
            node: vec![n],
            input: vec![value("x", &[2, 4])],
            output: vec![value("y", out)],
            ..Default::default()
        };
        let opset = vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        pb::ModelProto {
            ir_version: 8,
            opset_import: opset,
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn kinds(bytes: &[u8]) -> Vec<String> {
        let cg = load_bytes(bytes, "m.onnx", &ImportOptions { strict: true, ..Default::default() })
            .expect("loads");
        cg.nodes().map(|(_, n)| n.kind.as_str().to_string()).collect()
    }

    #[test]
    fn reduce_l2_reads_as_square_sum_sqrt() {
        let k = kinds(&model("ReduceL2", &[2, 1]));
        for want in ["Mul", "ReduceSum", "Sqrt"] {
            assert!(k.iter().any(|s| s == want), "{want} missing from {k:?}");
        }
    }

    #[test]
    fn is_nan_reads_as_a_comparison() {
        let k = kinds(&model("IsNaN", &[2, 4]));
        assert!(k.iter().filter(|s| *s == "Compare").count() >= 1, "{k:?}");
    }
}
