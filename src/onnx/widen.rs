//! bfloat16 read as float32. PyTorch writes a `model.bfloat16()` network (the usual precision
//! of language models) with bfloat16 initializers, inputs and `Cast`s, and tract has no
//! bfloat16 type: it refused such files as not valid ONNX. A bfloat16 value is the upper half
//! of the float32 of the same value, so widening is exact: every count, shape and graph is
//! the float32 file's, and the executor computes in float32 as it does for every file.
//!
//! [`widen`] rewrites a model's types, attributes and inline tensors; a tensor still in a side
//! file keeps its type until [`super::external::load_external`] has read it and calls
//! [`tensor`] on it.

use tract_onnx::pb;

const BFLOAT16: i32 = 16;
const FLOAT: i32 = 1;
const EXTERNAL: i32 = pb::tensor_proto::DataLocation::External as i32;

/// Rewrites every bfloat16 of the model to float32: graph inputs, outputs and value infos,
/// `Cast` targets and other dtype attributes, initializers and constant attributes, in the
/// main graph and its subgraphs. Returns whether there was any.
pub(super) fn widen(model: &mut pb::ModelProto) -> bool {
    model.graph.as_mut().is_some_and(graph)
}

fn graph(g: &mut pb::GraphProto) -> bool {
    let mut any = false;
    for vi in g.input.iter_mut().chain(g.output.iter_mut()).chain(g.value_info.iter_mut()) {
        any |= value_type(vi.r#type.as_mut());
    }
    for t in g.initializer.iter_mut() {
        any |= tensor(t);
    }
    for n in g.node.iter_mut() {
        for a in n.attribute.iter_mut() {
            any |= attribute(a);
        }
    }
    any
}

fn attribute(a: &mut pb::AttributeProto) -> bool {
    let mut any = false;
    // `to` of Cast, `dtype` of EyeLike and the random generators
    if (a.name == "to" || a.name == "dtype") && a.i == BFLOAT16 as i64 {
        a.i = FLOAT as i64;
        any = true;
    }
    for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
        any |= tensor(t);
    }
    for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
        any |= graph(g);
    }
    any
}

/// The element type `data_type` is read as: float32 for bfloat16, itself otherwise.
pub(super) fn read_as(data_type: i32) -> i32 {
    if data_type == BFLOAT16 {
        FLOAT
    } else {
        data_type
    }
}

/// A tensor type's element type, bfloat16 made float32.
fn value_type(ty: Option<&mut pb::TypeProto>) -> bool {
    let Some(pb::type_proto::Value::TensorType(t)) = ty.and_then(|t| t.value.as_mut()) else {
        return false;
    };
    let bf16 = t.elem_type == BFLOAT16;
    t.elem_type = read_as(t.elem_type);
    bf16
}

/// A bfloat16 tensor whose data the model holds becomes the float32 tensor of the same
/// values (its bits, from `raw_data` or from `int32_data` as the standard allows, shifted
/// into the upper half). A tensor in a side file is left for after it is read.
pub(super) fn tensor(t: &mut pb::TensorProto) -> bool {
    if t.data_type != BFLOAT16 || t.data_location == Some(EXTERNAL) {
        return false;
    }
    let bits: Vec<u16> = if t.raw_data.is_empty() {
        t.int32_data.iter().map(|&v| v as u16).collect()
    } else {
        t.raw_data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
    };
    t.raw_data =
        bits.iter().flat_map(|&b| f32::from_bits(u32::from(b) << 16).to_le_bytes()).collect();
    t.int32_data.clear();
    t.data_type = FLOAT;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16(values: &[f32]) -> Vec<u16> {
        values.iter().map(|v| (v.to_bits() >> 16) as u16).collect()
    }

    fn floats(t: &pb::TensorProto) -> Vec<f32> {
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    #[test]
    fn bfloat16_data_widens_exactly_from_either_field() {
        let values = [1.0, -2.5, 0.0078125, -3.389_531_4e38, f32::INFINITY];
        let raw: Vec<u8> = bf16(&values).iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut a =
            pb::TensorProto { data_type: 16, dims: vec![5], raw_data: raw, ..Default::default() };
        let ints = bf16(&values).iter().map(|&b| i32::from(b)).collect();
        let mut b = pb::TensorProto {
            data_type: 16,
            dims: vec![5],
            int32_data: ints,
            ..Default::default()
        };
        assert!(tensor(&mut a) && tensor(&mut b));
        assert_eq!((a.data_type, b.data_type), (1, 1));
        assert_eq!(floats(&a), values);
        assert_eq!(floats(&b), values);
        assert!(b.int32_data.is_empty());
        // idempotent: a float32 tensor is left alone
        assert!(!tensor(&mut a));
    }

    #[test]
    fn a_side_file_tensor_waits_until_it_is_read() {
        let mut t =
            pb::TensorProto { data_type: 16, data_location: Some(EXTERNAL), ..Default::default() };
        assert!(!tensor(&mut t));
        assert_eq!(t.data_type, 16);
    }

    #[test]
    fn types_casts_and_subgraphs_widen() {
        let typed = |elem_type| pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cast = |to: i64| pb::NodeProto {
            op_type: "Cast".into(),
            attribute: vec![pb::AttributeProto { name: "to".into(), i: to, ..Default::default() }],
            ..Default::default()
        };
        let body = pb::GraphProto { node: vec![cast(16)], ..Default::default() };
        let branch = pb::NodeProto {
            op_type: "If".into(),
            attribute: vec![pb::AttributeProto {
                name: "then_branch".into(),
                g: Some(body),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut m = pb::ModelProto {
            graph: Some(pb::GraphProto {
                input: vec![typed(16)],
                output: vec![typed(1)],
                node: vec![cast(16), cast(7), branch],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(widen(&mut m));
        let g = m.graph.as_ref().unwrap();
        let elem = |vi: &pb::ValueInfoProto| match vi.r#type.as_ref().unwrap().value.as_ref() {
            Some(pb::type_proto::Value::TensorType(t)) => t.elem_type,
            _ => 0,
        };
        assert_eq!((elem(&g.input[0]), elem(&g.output[0])), (1, 1));
        assert_eq!((g.node[0].attribute[0].i, g.node[1].attribute[0].i), (1, 7));
        let inner = g.node[2].attribute[0].g.as_ref().unwrap();
        assert_eq!(inner.node[0].attribute[0].i, 1);
        assert!(!widen(&mut m), "a second pass finds nothing");
    }
}
