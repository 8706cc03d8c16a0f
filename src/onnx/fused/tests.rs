//! The forms the expansion reads and the ones it keeps (tests/fused.rs checks the values
//! against ONNX Runtime on files).

use super::expand;
use tract_onnx::pb;

fn node(op: &str, domain: &str, input: &[&str], output: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        name: "f".into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: output.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_attr(mut n: pb::NodeProto, a: pb::AttributeProto) -> pb::NodeProto {
    n.attribute.push(a);
    n
}

/// The op types of the graph of `n` after the expansion, and the model's notes.
fn expanded(n: pb::NodeProto, opset: i64) -> (Vec<String>, Vec<String>) {
    let graph = pb::GraphProto { node: vec![n], ..Default::default() };
    let opset_import = vec![pb::OperatorSetIdProto { domain: String::new(), version: opset }];
    let mut m = pb::ModelProto { graph: Some(graph), opset_import, ..Default::default() };
    expand(&mut m);
    let notes = super::super::read_notes(&m).collect();
    (m.graph.unwrap().node.iter().map(|n| n.op_type.clone()).collect(), notes)
}

#[test]
fn rms_norm_reads_as_pytorch_writes_it_with_the_axes_of_its_opset() {
    let n = node("RMSNormalization", "", &["x", "g"], &["y"]);
    let (ops, notes) = expanded(n.clone(), 23);
    let want = ["Pow", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Mul", "Mul"];
    assert_eq!(ops, want);
    assert!(notes[0].contains("RMSNormalization x1"), "{notes:?}");
    // ONNX Runtime's own form in an opset-13 file: axes as an attribute
    let n = node("SimplifiedLayerNormalization", "", &["x", "g"], &["y"]);
    assert_eq!(expanded(n, 13).0, want);
}

#[test]
fn a_non_negative_axis_needs_the_declared_rank() {
    let n = with_attr(node("RMSNormalization", "", &["x", "g"], &["y"]), super::attr_i("axis", 1));
    assert_eq!(expanded(n, 23).0, ["RMSNormalization"], "the rank of x is not declared");
    assert_eq!(super::norm_axes(1, Some(3)), Some(vec![1, 2]));
    assert_eq!(super::norm_axes(-2, None), Some(vec![-2, -1]));
    assert_eq!(super::norm_axes(3, Some(3)), None);
}

#[test]
fn the_forms_it_does_not_read_are_kept_for_the_reader_to_name() {
    let ms = "com.microsoft";
    let kept = [
        // a KV cache
        node("Attention", "", &["q", "k", "v", "", "past_k", "past_v"], &["y"]),
        node("Attention", "", &["q", "k", "v"], &["y", "present_k", "present_v"]),
        // a soft cap
        with_attr(node("Attention", "", &["q", "k", "v"], &["y"]), super::attr_f("softcap", 30.0)),
        // query heads that the key/value heads do not divide
        with_attr(
            with_attr(
                node("Attention", "", &["q", "k", "v"], &["y"]),
                super::attr_i("q_num_heads", 3),
            ),
            super::attr_i("kv_num_heads", 2),
        ),
        // ONNX Runtime's Attention with a KV cache, and with a mask of lengths
        node("Attention", ms, &["x", "w", "b", "", "past"], &["y"]),
        node("Attention", ms, &["x", "w", "b", "lengths"], &["y"]),
        // the mean of a skip norm read
        node("SkipLayerNormalization", ms, &["x", "s", "g"], &["y", "mean"]),
        // a contrib op in the wrong domain is someone else's op
        node("FastGelu", "", &["x"], &["y"]),
    ];
    for n in kept {
        let op = n.op_type.clone();
        let (ops, notes) = expanded(n, 23);
        assert_eq!(ops, [op], "kept as it is");
        assert!(notes.is_empty(), "{notes:?}");
    }
}

#[test]
fn a_skip_norm_writes_its_residual_sum_where_it_is_read() {
    let n = node(
        "SkipLayerNormalization",
        "com.microsoft",
        &["x", "s", "g", "b", "bias"],
        &["y", "", "", "sum"],
    );
    let graph = pb::GraphProto { node: vec![n], ..Default::default() };
    let mut m = pb::ModelProto { graph: Some(graph), ..Default::default() };
    expand(&mut m);
    let nodes = &m.graph.unwrap().node;
    let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Add", "Add", "LayerNormalization"]);
    assert_eq!(nodes[0].input, ["x", "bias"], "the MatMul's bias first, as before the fusion");
    assert_eq!(nodes[1].output, ["sum"]);
    assert_eq!(nodes[2].input, ["sum", "g", "b"]);
}
