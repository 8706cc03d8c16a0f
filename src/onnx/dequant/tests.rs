//! Unit tests of [`super`]: the dequantized values, and hand-written files of the forms
//! the corpus of ONNX Runtime's quantizers does not hold (tests/quantized.rs has those).

use super::dequantize;
use crate::graph::Cg;
use crate::onnx::{load_bytes, ImportOptions};
use prost::Message;
use tract_onnx::pb;

fn tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type,
        dims: dims.to_vec(),
        raw_data: raw,
        ..Default::default()
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i8s(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

use super::super::test_node as node;

fn int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 2, i, ..Default::default() }
}

/// A file with float input `x` of `dims`, output `y`.
fn file(dims: &[usize], nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>) -> Vec<u8> {
    let graph = pb::GraphProto {
        node: nodes,
        initializer: inits,
        input: vec![crate::onnx::write::value_info("x", dims)],
        output: vec![crate::onnx::write::value_info("y", &[])],
        ..Default::default()
    };
    let opset = ["", "com.microsoft"].map(|d| pb::OperatorSetIdProto {
        domain: d.into(),
        version: if d.is_empty() { 17 } else { 1 },
    });
    let model = pb::ModelProto {
        ir_version: 8,
        graph: Some(graph),
        opset_import: opset.to_vec(),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn read(bytes: &[u8]) -> Cg {
    load_bytes(bytes, "q.onnx", &ImportOptions { strict: true, ..Default::default() })
        .expect("reads")
}

fn scalars(x_zp: i8, y_zp: i8) -> Vec<pb::TensorProto> {
    scales(x_zp, y_zp, 0.2)
}

fn scales(x_zp: i8, y_zp: i8, y_scale: f32) -> Vec<pb::TensorProto> {
    vec![
        tensor("xs", 1, &[], f32s(&[0.1])),
        tensor("xz", 3, &[], i8s(&[x_zp])),
        tensor("ys", 1, &[], f32s(&[y_scale])),
        tensor("yz", 3, &[], i8s(&[y_zp])),
    ]
}

#[test]
fn a_per_channel_weight_dequantizes_along_its_axis_with_its_zero_points() {
    // w [2, 3] on axis 0: row 0 scale 0.5 zero point 0, row 1 scale 2 zero point 1
    let q = [-128i8, 0, 127, 1, 2, 3];
    let mut inits = vec![
        tensor("wq", 3, &[2, 3], i8s(&q)),
        tensor("ws", 1, &[2], f32s(&[0.5, 2.0])),
        tensor("wz", 3, &[2], i8s(&[0, 1])),
    ];
    let mut dq = node("DequantizeLinear", &["wq", "ws", "wz"], "w", "");
    dq.attribute.push(int("axis", 0));
    inits.push(tensor("b", 1, &[2], f32s(&[0.0, 0.0])));
    let mut gemm = node("Gemm", &["x", "w", "b"], "y", "");
    gemm.attribute.push(int("transB", 1));
    let nodes = vec![dq, gemm];
    let mut m =
        pb::ModelProto::decode(file(&[1, 3], nodes.clone(), inits.clone()).as_slice()).unwrap();
    dequantize(&mut m);
    let g = m.graph.as_ref().unwrap();
    let w = g.initializer.iter().find(|t| t.name == "w").expect("the float weight");
    let got: Vec<f32> =
        w.raw_data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(got, vec![-64.0, 0.0, 63.5, 0.0, 2.0, 4.0]);
    assert_eq!((w.data_type, w.dims.clone()), (1, vec![2, 3]));
    assert!(g.node.iter().all(|n| n.op_type != "DequantizeLinear"));
    assert!(g.initializer.iter().all(|t| t.name != "wq"), "the integer weight is dropped");
    let cg = read(&file(&[1, 3], nodes, inits));
    assert_eq!(cg.summary().params, 8);
}

/// `QuantizeLinear` -> `QLinearMatMul` (int8 weight `[4, 3]`) -> `DequantizeLinear`, the
/// output quantized at `y_scale` and `y_zp`.
fn qlinear_matmul(y_zp: i8, y_scale: f32) -> Vec<u8> {
    let mut inits = scales(0, y_zp, y_scale);
    inits.push(tensor("wq", 3, &[4, 3], i8s(&[1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12])));
    inits.push(tensor("ws", 1, &[], f32s(&[0.05])));
    inits.push(tensor("wz", 3, &[], i8s(&[0])));
    let nodes = vec![
        node("QuantizeLinear", &["x", "xs", "xz"], "xq", ""),
        node("QLinearMatMul", &["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], "yq", ""),
        node("DequantizeLinear", &["yq", "ys", "yz"], "y", ""),
    ];
    file(&[1, 4], nodes, inits)
}

#[test]
fn a_qlinear_matmul_reads_as_a_linear_layer_and_a_zero_point_at_the_minimum_as_a_relu() {
    let cg = read(&qlinear_matmul(3, 0.2));
    let s = cg.summary();
    assert_eq!((s.params, s.macs), (12, 12));
    assert_eq!(s.by_kind.get("Linear"), Some(&1));
    assert_eq!(s.by_kind.get("Relu"), None, "an output zero point of 3 clips at -0.6, not 0");
    assert!(
        cg.notes[0].starts_with("a quantized network (QDQ, 2 ops; QOperator, 1 ops)"),
        "{:?}",
        cg.notes
    );
    let cg = read(&qlinear_matmul(i8::MIN, 0.2));
    assert_eq!(cg.summary().by_kind.get("Relu"), Some(&1), "int8's -128 clips at 0");
    assert!(cg.notes[0].contains("1 ReLUs the quantizer folded"), "{:?}", cg.notes);
    // a range of 255 steps of 6 / 255 ends at 6: the quantizer removed a ReLU6
    let cg = read(&qlinear_matmul(i8::MIN, 6.0 / 255.0));
    assert_eq!(cg.summary().by_kind.get("Relu6"), Some(&1), "{:?}", cg.summary().by_kind);
    assert!(cg.notes[0].contains("(1 of them ReLU6"), "{:?}", cg.notes);
}

#[test]
fn only_a_clip_after_a_product_or_a_residual_sum_is_a_relu() {
    // all three quantized at zero point -128, the clip at zero: s = x W + b is a layer whose
    // ReLU the quantizer removed; a + a sums non-negative values, and 1 + erf(x) (GELU's) is
    // non-negative by itself: neither needs a ReLU
    let mut inits = scalars(i8::MIN, i8::MIN);
    inits.push(tensor("w", 1, &[4, 4], f32s(&[0.5, -1.0, 1.5, -2.0].repeat(4))));
    inits.push(tensor("b", 1, &[4], f32s(&[1.0, 2.0, 3.0, 4.0])));
    inits.push(tensor("one", 1, &[], f32s(&[1.0])));
    let qdq = |x: &str, out: &str| {
        let q = format!("{out}_q");
        [
            node("QuantizeLinear", &[x, "xs", "xz"], &q, ""),
            node("DequantizeLinear", &[&q, "xs", "xz"], out, ""),
        ]
    };
    let mut nodes = vec![node("MatMul", &["x", "w"], "m", ""), node("Add", &["m", "b"], "s", "")];
    nodes.extend(qdq("s", "a"));
    nodes.push(node("Add", &["a", "a"], "t", ""));
    nodes.extend(qdq("t", "tt"));
    nodes.extend([node("Erf", &["x"], "e", ""), node("Add", &["e", "one"], "u", "")]);
    nodes.extend(qdq("u", "uu"));
    nodes.push(node("Mul", &["tt", "uu"], "y", ""));
    let cg = read(&file(&[1, 4], nodes, inits));
    assert_eq!(cg.summary().by_kind.get("Relu"), Some(&1), "{:?}", cg.summary().by_kind);
}

#[test]
fn a_blocked_weight_is_kept_and_the_note_says_it_is_not_counted() {
    let mut inits =
        vec![tensor("wq", 3, &[4, 4], i8s(&[1; 16])), tensor("ws", 1, &[2, 4], f32s(&[0.5; 8]))];
    inits.push(tensor("wz", 3, &[2, 4], i8s(&[0; 8])));
    let mut dq = node("DequantizeLinear", &["wq", "ws", "wz"], "w", "");
    dq.attribute.extend([int("axis", 0), int("block_size", 2)]);
    let nodes = vec![dq, node("MatMul", &["x", "w"], "y", "")];
    let mut m = pb::ModelProto::decode(file(&[1, 4], nodes, inits).as_slice()).unwrap();
    dequantize(&mut m);
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.node[0].op_type, "DequantizeLinear");
    let note = &m.metadata_props.last().unwrap().value;
    assert!(note.contains("1 weights quantized in a form nape does not read"), "{note}");
}

#[test]
fn a_file_without_quantized_ops_is_left_as_it_is() {
    let bytes = file(&[1, 4], vec![node("Relu", &["x"], "y", "")], vec![]);
    let before = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let mut after = before.clone();
    dequantize(&mut after);
    assert_eq!(before, after);
}

#[test]
fn malformed_quantized_nodes_never_panic() {
    let ops = [
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "ConvInteger",
        "MatMulInteger",
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearGlobalAveragePool",
        "QLinearSigmoid",
        "MatMulNBits",
        "Identity",
        "Reshape",
        "Cast",
        "Mul",
        "Add",
    ];
    let mut inits = scalars(0, 0);
    inits.push(tensor("empty", 1, &[0], vec![]));
    inits.push(tensor("wq", 3, &[2, 2], i8s(&[1, 2, 3, 4])));
    inits.push(tensor("bad", 3, &[3], i8s(&[1])));
    for op in ops {
        for input in
            [&[][..], &["x"], &["wq", "empty", "empty"], &["x", "xs", "bad", "wq", "empty"]]
        {
            for output in [vec![], vec!["y".to_string()]] {
                let mut n = node(op, input, "y", "");
                n.output = output.clone();
                let mut nodes = vec![node("DynamicQuantizeLinear", &["x"], "dq", ""), n];
                nodes[0].output = vec!["dq".into(), "ds".into(), "dz".into()];
                let bytes = file(&[1, 2], nodes, inits.clone());
                let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
                dequantize(&mut m); // must not panic
                let _ = load_bytes(&bytes, "q.onnx", &ImportOptions::default());
                // nor this
            }
        }
    }
}

#[test]
fn a_quantized_float_constant_reads_as_the_constant() {
    // Swin's GELU: a Constant quantized and dequantized where it is added (QDQ of a constant)
    let mut c = node("Constant", &[], "c", "");
    let value = tensor("", 1, &[4], f32s(&[0.5, 1.0, 1.5, 2.0]));
    c.attribute.push(pb::AttributeProto {
        name: "value".into(),
        r#type: 4,
        t: Some(value),
        ..Default::default()
    });
    let nodes = vec![
        c,
        node("QuantizeLinear", &["c", "xs", "xz"], "cq", ""),
        node("DequantizeLinear", &["cq", "xs", "xz"], "cd", ""),
        node("Add", &["x", "cd"], "y", ""),
    ];
    let cg = read(&file(&[1, 4], nodes, scalars(0, 0)));
    let s = cg.summary();
    assert_eq!((s.by_kind.get("Add"), s.unknown.len()), (Some(&1), 0), "{:?}", s.by_kind);
    assert!(!cg.notes.iter().any(|n| n.contains("does not read")), "{:?}", cg.notes);
}

#[test]
fn a_4_bit_weight_reads_as_its_float_matrix_or_is_declared_by_its_shape() {
    // K = 4, N = 2, one block of 16 per column: 8 bytes each, low nibble first
    let mut n = node("MatMulNBits", &["x", "q", "s"], "y", "com.microsoft");
    n.attribute = vec![int("K", 4), int("N", 2), int("bits", 4), int("block_size", 16)];
    let column = |a: u8, b: u8| [vec![a, b], vec![0x88; 6]].concat();
    let q = tensor("q", 2, &[2, 1, 8], [column(0x98, 0xba), column(0x78, 0x56)].concat());
    let scales = tensor("s", 1, &[2], [0.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
    let bytes = file(&[1, 4], vec![n.clone()], vec![q, scales.clone()]);
    let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    dequantize(&mut m);
    let g = m.graph.unwrap();
    let w = g.initializer.iter().find(|t| t.name == "y/nape_w").expect("a float weight");
    let w: Vec<f32> =
        w.raw_data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    // q - 8 (the default zero point) times the column's scale, as [K, N]
    assert_eq!(w, [0.0, 0.0, 0.5, -2.0, 1.0, -4.0, 1.5, -6.0]);
    // bytes of the wrong length: the weight is declared by its shape and still counted
    let short = tensor("q", 2, &[2, 1, 2], vec![0x98, 0xba, 0x78, 0x56]);
    let cg = load_bytes(
        &file(&[1, 4], vec![n], vec![short, scales]),
        "q.onnx",
        &ImportOptions::default(),
    )
    .expect("reads");
    assert_eq!(cg.summary().params, 8);
}
