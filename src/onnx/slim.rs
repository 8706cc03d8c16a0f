//! The shapes-only reader: ONNX bytes in, the same model out without the data of its large
//! float initializers (the weights), which become typed graph inputs declared under
//! [`super::WEIGHT_INPUTS_KEY`], exactly the form of a file exported without weights.
//!
//! The graph, its shapes, parameter counts and costs need only the weights' shapes. Decoding
//! their bytes (copied by protobuf decoding, then again into tensors) is most of the work and
//! memory of reading a file with weights in, so [`slim`] walks the protobuf wire format and
//! copies every field except those bytes. Integer tensors, small float tensors (at most
//! [`KEEP_ELEMENTS`] elements: scalars, Resize scales, Clip bounds) and tensors stored outside
//! the file are kept as they are here; the weights among the latter are checked where they are
//! and declared the same way without being read (`external::declare_external_weights`).
//! Commands that run the network (proxies) read the whole file.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::Path;

/// Float initializers of at most this many elements keep their values.
pub const KEEP_ELEMENTS: u64 = 64;

const FLOAT_TYPES: [u64; 4] = [1, 10, 11, 16]; // float, float16, double, bfloat16

/// ModelProto fields and GraphProto fields read here (TensorProto's: dims 1, data_type 2, name
/// 8, data_location 14; its data 4-7 and 9-11).
const MODEL_GRAPH: u64 = 7;
const MODEL_METADATA: u64 = 14;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;

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
#[derive(Default)]
struct TensorHead {
    name: Vec<u8>,
    data_type: u64,
    dims: Vec<u64>,
    external: bool,
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
    !t.external && is_weight(t.data_type, &t.dims)
}

/// Whether a tensor of this ONNX element type and dims is read for its shape only: a float
/// tensor of more than [`KEEP_ELEMENTS`] elements.
pub(super) fn is_weight(data_type: u64, dims: &[u64]) -> bool {
    let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    FLOAT_TYPES.contains(&data_type) && numel.is_some_and(|n| n > KEEP_ELEMENTS)
}

/// Whether a tensor's data is kept for how the nodes read it, whatever its size: an `Identity`
/// copies it (`copied`), or several nodes (`reread`) or an `Add` (`added`) read it, up to
/// [`KEEP_REREAD`] elements (`numel`).
fn kept_for_its_readers(copied: bool, reread: bool, added: bool, numel: Option<u64>) -> bool {
    copied || ((reread || added) && numel.is_some_and(|n| n <= KEEP_REREAD))
}

/// The initializers of a decoded graph whose data a shapes-only reading keeps for how the
/// nodes read them ([`kept_for_its_readers`], as the walker decides for data in the file):
/// for external data, which is declared rather than walked.
pub(super) fn kept_external(graph: &tract_onnx::pb::GraphProto) -> HashSet<String> {
    let (mut readers, mut copied, mut added) =
        (std::collections::HashMap::<&str, usize>::new(), HashSet::new(), HashSet::new());
    for n in &graph.node {
        for i in &n.input {
            *readers.entry(i.as_str()).or_default() += 1;
            match n.op_type.as_str() {
                "Identity" => copied.insert(i.as_str()),
                "Add" => added.insert(i.as_str()),
                _ => false,
            };
        }
    }
    let numel = |t: &tract_onnx::pb::TensorProto| {
        t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(u64::try_from(d).ok()?))
    };
    graph
        .initializer
        .iter()
        .filter(|t| {
            let name = t.name.as_str();
            let reread = readers.get(name).is_some_and(|&r| r > 1);
            kept_for_its_readers(copied.contains(name), reread, added.contains(name), numel(t))
        })
        .map(|t| t.name.clone())
        .collect()
}

/// The inputs of a NodeProto's bytes and its op type (its inputs, field 1, and op type, field
/// 4, read without decoding the rest).
fn node_inputs(node: &[u8]) -> std::io::Result<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut w = Walker::new(std::io::Cursor::new(node));
    let (mut inputs, mut op) = (Vec::new(), Vec::new());
    while w.pos < node.len() as u64 {
        let (key, wire, len) = w.header(node.len() as u64)?;
        match (key >> 3, wire) {
            (1, 2) => inputs.push(w.bytes(len)?),
            (4, 2) => op = w.bytes(len)?,
            _ => w.skip(wire, len)?,
        }
    }
    Ok((inputs, op))
}

/// The input slots of a quantized op that hold its integer weights.
fn quantized_weight_slots(op: &[u8]) -> &'static [usize] {
    match op {
        b"DequantizeLinear" => &[0],
        b"ConvInteger" | b"MatMulNBits" => &[1],
        b"QLinearConv" => &[3],
        b"MatMulInteger" => &[0, 1],
        b"QLinearMatMul" | b"QGemm" | b"QLinearAdd" | b"QLinearMul" => &[0, 3],
        _ => &[],
    }
}

/// Reads protobuf fields from a file or a buffer, skipping what it is asked to skip.
struct Walker<R> {
    r: R,
    pos: u64,
    /// Names of the tensors an `Identity` node reads (seen in the nodes, which the file writes
    /// before the initializers): their data is kept, so that the loader can tell a weight used
    /// in several places from parameters that only share initial values.
    copied: HashSet<Vec<u8>>,
    /// Names more than one node reads: their data is kept for the same reason, up to
    /// [`KEEP_REREAD`] elements (a tied embedding's varied values are not read for that).
    reread: HashSet<Vec<u8>>,
    /// Names read by the nodes seen so far.
    read: HashSet<Vec<u8>>,
    /// Names read at an integer weight slot of a quantized op, and names read anywhere else:
    /// an int8 or uint8 tensor of more than [`KEEP_ELEMENTS`] elements read only as a
    /// quantized weight is left out like a float weight (the dequantization makes the float
    /// weight of its shape).
    quantized: HashSet<Vec<u8>>,
    plain: HashSet<Vec<u8>>,
    /// Names an `Add` reads: their data is kept up to [`KEEP_REREAD`] elements, so that a
    /// constant mask added to attention scores (0 and -inf or `finfo.min`) can be told from a
    /// parameter.
    added: HashSet<Vec<u8>>,
}

/// Tensors read by several nodes keep their data up to this many elements: the merged
/// initializers of equal values that ONNX Runtime's optimiser writes (norm scales, biases, zero
/// tokens) are far smaller; a larger one read twice (a tied embedding) counts once, as one
/// parameter used again.
pub(super) const KEEP_REREAD: u64 = 1 << 20;

fn malformed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed protobuf")
}

impl<R: Read + Seek> Walker<R> {
    fn new(r: R) -> Walker<R> {
        Walker {
            r,
            pos: 0,
            copied: HashSet::new(),
            reread: HashSet::new(),
            read: HashSet::new(),
            quantized: HashSet::new(),
            plain: HashSet::new(),
            added: HashSet::new(),
        }
    }

    /// Whether the data of the initializer `head` describes is left out.
    fn drops(&self, head: &TensorHead) -> bool {
        let numel = head.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let n = &head.name;
        let read = (self.reread.contains(n), self.added.contains(n));
        let reread = kept_for_its_readers(false, read.0, read.1, numel);
        let quantized = !head.external
            && matches!(head.data_type, 2 | 3)
            && numel.is_some_and(|n| n > KEEP_ELEMENTS)
            && self.quantized.contains(&head.name)
            && !self.plain.contains(&head.name);
        quantized || (drops(head) && !self.copied.contains(&head.name) && !reread)
    }

    fn varint(&mut self) -> std::io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let mut b = [0u8];
            self.r.read_exact(&mut b)?;
            self.pos += 1;
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    /// The next field's key (number, wire type) and, for a length-delimited one, its length,
    /// checked to end by `end`.
    fn header(&mut self, end: u64) -> std::io::Result<(u64, u8, u64)> {
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        let len = match wire {
            0 => 0,
            1 => 8,
            5 => 4,
            2 => self.varint()?,
            _ => return Err(malformed()),
        };
        if wire != 0 && self.pos.checked_add(len).is_none_or(|e| e > end) {
            return Err(malformed());
        }
        Ok((key, wire, len))
    }

    fn bytes(&mut self, len: u64) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; usize::try_from(len).map_err(|_| malformed())?];
        self.r.read_exact(&mut v)?;
        self.pos += len;
        Ok(v)
    }

    /// The rest of a field whose header was read, appended to `out` with its key.
    fn copy(&mut self, key: u64, wire: u8, len: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
        put_varint(out, key);
        match wire {
            0 => put_varint(out, self.varint()?),
            2 => {
                put_varint(out, len);
                out.extend(self.bytes(len)?);
            }
            _ => out.extend(self.bytes(len)?),
        }
        Ok(())
    }

    fn skip(&mut self, wire: u8, len: u64) -> std::io::Result<()> {
        if wire == 0 {
            self.varint()?;
        } else {
            self.r.seek_relative(i64::try_from(len).map_err(|_| malformed())?)?;
            self.pos += len;
        }
        Ok(())
    }

    /// A TensorProto ending at `end`: its bytes, or `None` when its data is left out (then
    /// `head` says what it was).
    fn tensor(&mut self, end: u64, head: &mut TensorHead) -> std::io::Result<Option<Vec<u8>>> {
        let (mut out, mut skipped) = (Vec::new(), false);
        while self.pos < end {
            let (key, wire, len) = self.header(end)?;
            match (key >> 3, wire) {
                (1, 0) => {
                    let d = self.varint()?;
                    head.dims.push(d);
                    put_varint(&mut out, key);
                    put_varint(&mut out, d);
                }
                (1, 2) => {
                    let packed = self.bytes(len)?;
                    let mut p = std::io::Cursor::new(&packed[..]);
                    let mut w = Walker::new(&mut p);
                    while w.pos < len {
                        head.dims.push(w.varint()?);
                    }
                    put_bytes(&mut out, 1, &packed);
                }
                (2, 0) | (14, 0) => {
                    let v = self.varint()?;
                    if key >> 3 == 2 {
                        head.data_type = v;
                    } else {
                        head.external = v == 1;
                    }
                    put_varint(&mut out, key);
                    put_varint(&mut out, v);
                }
                (8, 2) => {
                    head.name = self.bytes(len)?;
                    put_bytes(&mut out, 8, &head.name);
                }
                (4..=7 | 9..=11, _) if self.drops(head) => {
                    skipped = true;
                    self.skip(wire, len)?
                }
                _ => self.copy(key, wire, len, &mut out)?,
            }
        }
        // data skipped before the name said to keep it (float_data written before the name):
        // the tensor is declared without data, as any weight
        Ok((!skipped && !self.drops(head)).then_some(out))
    }

    /// A GraphProto ending at `end`, without its large float initializers' data; the names of
    /// those that became inputs.
    fn graph(&mut self, end: u64) -> std::io::Result<(Vec<u8>, Vec<String>)> {
        let (mut out, mut inputs, mut names) = (Vec::new(), Vec::new(), Vec::new());
        while self.pos < end {
            let (key, wire, len) = self.header(end)?;
            if key >> 3 == GRAPH_INITIALIZER && wire == 2 {
                let mut head = TensorHead::default();
                match self.tensor(self.pos + len, &mut head)? {
                    Some(t) => put_bytes(&mut out, GRAPH_INITIALIZER, &t),
                    None => {
                        inputs.push(value_info(&head.name, head.data_type, &head.dims));
                        names.push(String::from_utf8_lossy(&head.name).into_owned());
                    }
                }
            } else if key >> 3 == GRAPH_NODE && wire == 2 {
                let node = self.bytes(len)?;
                let (inputs, op) = node_inputs(&node)?;
                let (identity, weight_slots) = (op == b"Identity", quantized_weight_slots(&op));
                for (slot, i) in inputs.into_iter().enumerate() {
                    if op == b"Add" {
                        self.added.insert(i.clone());
                    }
                    if weight_slots.contains(&slot) {
                        self.quantized.insert(i.clone());
                    } else {
                        self.plain.insert(i.clone());
                    }
                    if identity {
                        self.copied.insert(i);
                    } else if !self.read.insert(i.clone()) {
                        self.reread.insert(i);
                    }
                }
                put_bytes(&mut out, GRAPH_NODE, &node);
            } else {
                self.copy(key, wire, len, &mut out)?;
            }
        }
        for vi in &inputs {
            put_bytes(&mut out, GRAPH_INPUT, vi);
        }
        Ok((out, names))
    }

    /// A ModelProto ending at `end` (see [`slim`]).
    fn model(&mut self, end: u64) -> std::io::Result<Vec<u8>> {
        let (mut out, mut weights) = (Vec::new(), Vec::new());
        while self.pos < end {
            let (key, wire, len) = self.header(end)?;
            if key >> 3 == MODEL_GRAPH && wire == 2 {
                let (graph, names) = self.graph(self.pos + len)?;
                put_bytes(&mut out, MODEL_GRAPH, &graph);
                weights.extend(names);
            } else {
                self.copy(key, wire, len, &mut out)?;
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
}

fn invalid(source: &str, e: &std::io::Error) -> Error {
    let msg = match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            "protobuf decoding failed (malformed or truncated wire format)".to_string()
        }
        _ => format!("could not read the file: {e}"),
    };
    Error::InvalidOnnx { path: source.into(), msg }
}

/// `bytes` (a ModelProto) without the data of its large float initializers, which become
/// graph inputs declared as weights (see the module docs). Bytes that are not a valid protobuf
/// are an error naming `source`.
pub fn slim(bytes: &[u8], source: &str) -> Result<Vec<u8>> {
    let mut w = Walker::new(std::io::Cursor::new(bytes));
    w.model(bytes.len() as u64).map_err(|e| invalid(source, &e))
}

/// [`slim`] of a file, read in order without the skipped bytes (a 100 MB model with weights is
/// read as its few hundred kilobytes of graph).
pub fn slim_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| super::read_error(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    // a small buffer: a skipped weight leaves the buffer, and the next field is read afresh
    let mut w = Walker::new(std::io::BufReader::with_capacity(1 << 12, file));
    w.model(len).map_err(|e| invalid(&path.display().to_string(), &e))
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
    fn a_weight_an_identity_reads_keeps_its_data_when_its_name_comes_first() {
        let identity = pb::NodeProto {
            op_type: "Identity".into(),
            input: vec!["w".into()],
            output: vec!["w2".into()],
            ..Default::default()
        };
        let float_data = pb::TensorProto {
            name: "v".into(),
            dims: vec![100],
            data_type: 1,
            float_data: vec![0.5; 100],
            ..Default::default()
        };
        let read_by = |name: &str| pb::NodeProto { input: vec![name.into()], ..identity.clone() };
        let graph = pb::GraphProto {
            node: vec![identity.clone(), read_by("v"), read_by("u")],
            // w: raw data after its name (kept); v: float data before its name (declared);
            // x: read by no Identity (declared)
            initializer: vec![tensor("w", &[100], 1, 400), float_data, tensor("x", &[100], 1, 400)],
            ..Default::default()
        };
        let bytes = pb::ModelProto { graph: Some(graph), ..Default::default() }.encode_to_vec();
        let m = pb::ModelProto::decode(slim(&bytes, "m.onnx").unwrap().as_slice()).unwrap();
        let g = m.graph.unwrap();
        let kept: Vec<_> =
            g.initializer.iter().map(|t| (t.name.as_str(), t.raw_data.len())).collect();
        assert_eq!(kept, [("w", 400)]);
        let declared: Vec<_> = g.input.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(declared, ["v", "x"]);
    }

    /// Every prefix of a real file and every one-byte corruption of it is read or refused,
    /// never a panic (the loader's fuzz target covers the rest).
    #[test]
    fn truncated_and_corrupted_files_never_panic() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/exporters/nb201/nape/3.onnx");
        let bytes = std::fs::read(path).expect("fixture");
        for cut in (0..bytes.len()).step_by(97) {
            let _ = slim(&bytes[..cut], "m.onnx");
        }
        for at in (0..bytes.len()).step_by(61) {
            let mut b = bytes.clone();
            b[at] ^= 0xa5;
            let _ = slim(&b, "m.onnx");
        }
        assert!(slim(&bytes, "m.onnx").is_ok());
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
