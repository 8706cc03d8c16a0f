//! The shapes-only reader: ONNX bytes in, the same model out without the data of its large
//! float initializers (the weights), which become typed graph inputs declared under
//! [`super::WEIGHT_INPUTS_KEY`], exactly the form of a file exported without weights.
//!
//! The graph, its shapes, parameter counts and costs need only the weights' shapes. Decoding
//! their bytes (copied by protobuf decoding, then again into tensors) is most of the work and
//! memory of reading a file with weights in, so [`slim`] walks the protobuf wire format and
//! copies every field except those bytes. Integer tensors, small float tensors (at most
//! [`KEEP_ELEMENTS`] elements: scalars, Resize scales, Clip bounds) and tensors stored outside
//! the file are kept as they are. Commands that run the network (proxies) read the whole file.

use crate::error::{Error, Result};

/// Float initializers of at most this many elements keep their values.
pub const KEEP_ELEMENTS: u64 = 64;

const FLOAT_TYPES: [u64; 4] = [1, 10, 11, 16]; // float, float16, double, bfloat16

/// ModelProto fields and GraphProto fields read here.
const MODEL_GRAPH: u64 = 7;
const MODEL_METADATA: u64 = 14;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;

/// A protobuf field: number, wire type, and its bytes (the payload of a length-delimited field;
/// the whole encoded field otherwise, key included).
struct Field<'a> {
    number: u64,
    wire: u8,
    /// The field's bytes as written, key included.
    raw: &'a [u8],
    /// For length-delimited fields, the payload.
    payload: &'a [u8],
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in order; `None` when the bytes are not valid protobuf.
fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let mut payload: &[u8] = &[];
        match wire {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                payload = buf.get(pos..end)?;
                pos = end;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
        let raw = buf.get(start..pos)?;
        out.push(Field { number, wire, raw, payload });
    }
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, number << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, number: u64, v: u64) {
    put_varint(out, number << 3);
    put_varint(out, v);
}

/// What [`slim`] needs of a TensorProto: name, element type, dims, whether its data is external.
struct TensorHead {
    name: Vec<u8>,
    data_type: u64,
    dims: Vec<u64>,
    external: bool,
}

fn tensor_head(buf: &[u8]) -> Option<TensorHead> {
    let mut t = TensorHead { name: Vec::new(), data_type: 0, dims: Vec::new(), external: false };
    for f in fields(buf)? {
        match (f.number, f.wire) {
            (1, 0) => t.dims.push(varint(f.raw, &mut (key_len(f.raw)?))?),
            (1, 2) => {
                let mut p = 0;
                while p < f.payload.len() {
                    t.dims.push(varint(f.payload, &mut p)?);
                }
            }
            (2, 0) => t.data_type = varint(f.raw, &mut (key_len(f.raw)?))?,
            (8, 2) => t.name = f.payload.to_vec(),
            (14, 0) => t.external = varint(f.raw, &mut (key_len(f.raw)?))? == 1,
            _ => {}
        }
    }
    Some(t)
}

/// The length of the key at the start of a field's raw bytes.
fn key_len(raw: &[u8]) -> Option<usize> {
    let mut p = 0;
    varint(raw, &mut p)?;
    Some(p)
}

/// A ValueInfoProto: `name`, a tensor of `elem_type` with fixed `dims`.
fn value_info(name: &[u8], elem_type: u64, dims: &[u64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        put_uint(&mut dim, 1, d); // Dimension.dim_value
        put_bytes(&mut shape, 1, &dim); // TensorShapeProto.dim
    }
    let mut tensor = Vec::new();
    put_uint(&mut tensor, 1, elem_type); // TypeProto.Tensor.elem_type
    put_bytes(&mut tensor, 2, &shape); // TypeProto.Tensor.shape
    let mut ty = Vec::new();
    put_bytes(&mut ty, 1, &tensor); // TypeProto.tensor_type
    let mut vi = Vec::new();
    put_bytes(&mut vi, 1, name); // ValueInfoProto.name
    put_bytes(&mut vi, 2, &ty); // ValueInfoProto.type
    vi
}

/// Whether an initializer's data is left out: a float tensor of more than [`KEEP_ELEMENTS`]
/// elements held in the file.
fn drops(t: &TensorHead) -> bool {
    let numel = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    FLOAT_TYPES.contains(&t.data_type) && !t.external && numel.is_some_and(|n| n > KEEP_ELEMENTS)
}

/// The graph without its large float initializers' data; the names of those that became inputs.
fn slim_graph(graph: &[u8], source: &str) -> Result<(Vec<u8>, Vec<String>)> {
    let bad = || invalid(source, "the graph's protobuf is malformed");
    let mut out = Vec::with_capacity(graph.len().min(1 << 20));
    let mut inputs = Vec::new();
    let mut names = Vec::new();
    for f in fields(graph).ok_or_else(bad)? {
        if f.number == GRAPH_INITIALIZER && f.wire == 2 {
            let head = tensor_head(f.payload).ok_or_else(bad)?;
            if drops(&head) {
                inputs.push(value_info(&head.name, head.data_type, &head.dims));
                names.push(String::from_utf8_lossy(&head.name).into_owned());
                continue;
            }
        }
        out.extend_from_slice(f.raw);
    }
    for vi in &inputs {
        put_bytes(&mut out, GRAPH_INPUT, vi);
    }
    Ok((out, names))
}

fn invalid(source: &str, msg: &str) -> Error {
    Error::InvalidOnnx { path: source.into(), msg: msg.into() }
}

/// `bytes` (a ModelProto) without the data of its large float initializers, which become
/// graph inputs declared as weights (see the module docs). Bytes that are not a valid protobuf
/// are an error naming `source`.
pub fn slim(bytes: &[u8], source: &str) -> Result<Vec<u8>> {
    let top = fields(bytes)
        .ok_or_else(|| invalid(source, "protobuf decoding failed (malformed wire format)"))?;
    let mut out = Vec::with_capacity(bytes.len().min(1 << 20));
    let mut weights = Vec::new();
    for f in top {
        if f.number == MODEL_GRAPH && f.wire == 2 {
            let (graph, names) = slim_graph(f.payload, source)?;
            put_bytes(&mut out, MODEL_GRAPH, &graph);
            weights.extend(names);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    if !weights.is_empty() {
        // a second entry under the key: the reader joins every entry's names
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, super::WEIGHT_INPUTS_KEY.as_bytes());
        put_bytes(&mut entry, 2, weights.join(",").as_bytes());
        put_bytes(&mut out, MODEL_METADATA, &entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tract_onnx::pb;

    fn tensor(name: &str, dims: &[i64], data_type: i32, bytes: usize) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: vec![7u8; bytes],
            ..Default::default()
        }
    }

    #[test]
    fn large_float_initializers_become_declared_inputs_and_the_rest_is_kept() {
        let graph = pb::GraphProto {
            name: "g".into(),
            initializer: vec![
                tensor("w", &[16, 3, 3, 3], 1, 16 * 27 * 4),
                tensor("scale", &[4], 1, 16),
                tensor("shape", &[300], 7, 2400),
            ],
            ..Default::default()
        };
        let model = pb::ModelProto { ir_version: 8, graph: Some(graph), ..Default::default() };
        let bytes = model.encode_to_vec();
        let slimmed = slim(&bytes, "m.onnx").unwrap();
        assert!(slimmed.len() < bytes.len() - 16 * 27 * 4 + 200);
        let m = pb::ModelProto::decode(slimmed.as_slice()).unwrap();
        let g = m.graph.unwrap();
        let kept: Vec<_> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(kept, ["scale", "shape"]);
        assert_eq!(g.initializer[1].raw_data.len(), 2400);
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, "w");
        let dims = super::super::inputs::declared_dims(&g.input[0]);
        assert_eq!(dims, vec![Some(16), Some(3), Some(3), Some(3)]);
        assert_eq!(m.metadata_props.len(), 1);
        assert_eq!(m.metadata_props[0].key, crate::onnx::WEIGHT_INPUTS_KEY);
        assert_eq!(m.metadata_props[0].value, "w");
        assert_eq!(m.ir_version, 8);
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        for bad in [&[0x3a, 0xff][..], &[0x0b][..], &[0x3a, 0x05, 0x2a, 0x09][..]] {
            assert!(slim(bad, "m.onnx").is_err(), "{bad:?}");
        }
        let mut graph = Vec::new();
        put_bytes(&mut graph, GRAPH_INITIALIZER, &[0x0a, 0xff]); // dims: truncated packed varint
        let mut model = Vec::new();
        put_bytes(&mut model, MODEL_GRAPH, &graph);
        assert!(slim(&model, "m.onnx").is_err());
    }
}
