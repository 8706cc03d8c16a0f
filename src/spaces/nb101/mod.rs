//! NAS-Bench-101: a cell (adjacency matrix + ops) -> the benchmark's CIFAR-10 network as ONNX,
//! plus the benchmark's pruning and module hash.
//!
//! The network follows NAS-Bench-101's `model_builder.py`: a 3x3 convolution stem to 128
//! channels (conv without bias, BatchNorm, ReLU); three stacks of three cells, with a 2x2
//! stride-2 max-pool and a doubling of the channel count before the second and third stacks;
//! global average pooling and a dense layer to 10 classes. Inside a cell, the output vertex
//! concatenates the interior vertices that feed it (their channel counts split the cell's
//! output channels evenly, the remainder going one by one to the lowest-numbered of them), and
//! adds a 1x1 projection of the cell input when the input feeds the output directly. Every
//! other interior vertex takes the largest channel count among its successors; its inputs are
//! summed, the cell input entering through a 1x1 conv-BN-ReLU projection and wider interior
//! inputs being truncated to the first channels. Ops are `conv3x3-bn-relu`,
//! `conv1x1-bn-relu` and `maxpool3x3` (stride 1, same padding). BatchNorm uses the benchmark's
//! epsilon 1e-5 and momentum 0.997.
//!
//! Spec strings are `ROWS:OPS`, with the matrix rows joined by `/` and the ops by `,`, as in
//! `nb101_space_all_423624.tsv.gz`:
//! `0100110/0010000/0001001/0000010/0000010/0000001/0000000:input,conv3x3-bn-relu,...,output`.

use super::{bad_spec, Space};
use crate::error::Result;
use md5::{Digest, Md5};

mod network;

/// Most vertices an NB-101 cell may have (input and output included).
pub const MAX_VERTICES: usize = 7;
/// Most edges an NB-101 cell may have.
pub const MAX_EDGES: usize = 9;
/// Channels of the stem convolution.
pub const STEM_CHANNELS: usize = 128;
/// Stacks of cells.
pub const NUM_STACKS: usize = 3;
/// Cells per stack.
pub const CELLS_PER_STACK: usize = 3;
/// Classes of the dense layer (CIFAR-10).
pub const NUM_CLASSES: usize = 10;
/// Input shape of the network (one CIFAR-10 image).
pub const INPUT_SHAPE: [usize; 4] = [1, 3, 32, 32];
const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.997;

/// The op at one vertex of an NB-101 cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// The cell input (vertex 0).
    Input,
    /// 3x3 convolution, BatchNorm, ReLU.
    Conv3x3,
    /// 1x1 convolution, BatchNorm, ReLU.
    Conv1x1,
    /// 3x3 max-pooling, stride 1, same padding.
    MaxPool3x3,
    /// The cell output (last vertex).
    Output,
}

impl Op {
    /// The benchmark's name of the op.
    pub fn name(self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv3x3 => "conv3x3-bn-relu",
            Op::Conv1x1 => "conv1x1-bn-relu",
            Op::MaxPool3x3 => "maxpool3x3",
            Op::Output => "output",
        }
    }

    /// Parses a benchmark op name.
    pub fn from_name(s: &str) -> Option<Op> {
        Some(match s.trim() {
            "input" => Op::Input,
            "conv3x3-bn-relu" => Op::Conv3x3,
            "conv1x1-bn-relu" => Op::Conv1x1,
            "maxpool3x3" => Op::MaxPool3x3,
            "output" => Op::Output,
            _ => return None,
        })
    }

    /// NASLib's op id (0 input, 1 output, 2 maxpool3x3, 3 conv1x1-bn-relu, 4 conv3x3-bn-relu).
    pub fn from_naslib_id(id: u8) -> Option<Op> {
        Some(match id {
            0 => Op::Input,
            1 => Op::Output,
            2 => Op::MaxPool3x3,
            3 => Op::Conv1x1,
            4 => Op::Conv3x3,
            _ => return None,
        })
    }

    /// The label the module hash uses (input -1, output -2, conv3x3 0, conv1x1 1, maxpool 2).
    pub fn hash_label(self) -> i32 {
        match self {
            Op::Input => -1,
            Op::Output => -2,
            Op::Conv3x3 => 0,
            Op::Conv1x1 => 1,
            Op::MaxPool3x3 => 2,
        }
    }
}

/// An NB-101 cell: an upper-triangular adjacency matrix over at most 7 vertices (row = source;
/// vertex 0 is the input, the last the output) and one op per vertex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cell {
    n: usize,
    /// Row-major `n x n`.
    adj: Vec<bool>,
    ops: Vec<Op>,
}

impl Cell {
    /// A cell from a 0/1 matrix and ops; checks NB-101's rules (square, 2 to 7 vertices,
    /// strictly upper triangular, at most 9 edges, input first, output last, interior ops
    /// from the three allowed). The cell is not pruned.
    pub fn new(matrix: &[Vec<u8>], ops: &[Op]) -> Result<Cell> {
        let n = matrix.len();
        let spec = || format!("{matrix:?} {:?}", ops.iter().map(|o| o.name()).collect::<Vec<_>>());
        let bad = |msg: String| bad_spec(Space::Nb101, &spec(), msg);
        if !(2..=MAX_VERTICES).contains(&n) {
            return Err(bad(format!("{n} vertices; a cell has 2 to {MAX_VERTICES}")));
        }
        if ops.len() != n {
            return Err(bad(format!("{} ops for {n} vertices", ops.len())));
        }
        let mut adj = vec![false; n * n];
        for (i, row) in matrix.iter().enumerate() {
            if row.len() != n {
                return Err(bad(format!("row {i} has {} entries, expected {n}", row.len())));
            }
            for (j, &v) in row.iter().enumerate() {
                match v {
                    0 => {}
                    1 if j > i => adj[i * n + j] = true,
                    1 => return Err(bad(format!("edge {i}->{j} is not upper triangular"))),
                    _ => return Err(bad(format!("entry ({i},{j}) is {v}, not 0 or 1"))),
                }
            }
        }
        let edges = adj.iter().filter(|&&e| e).count();
        if edges > MAX_EDGES {
            return Err(bad(format!("{edges} edges; a cell has at most {MAX_EDGES}")));
        }
        if ops[0] != Op::Input || ops[n - 1] != Op::Output {
            return Err(bad("the first op must be 'input' and the last 'output'".into()));
        }
        if let Some(o) = ops[1..n - 1].iter().find(|o| matches!(o, Op::Input | Op::Output)) {
            return Err(bad(format!("interior vertex with op '{}'", o.name())));
        }
        Ok(Cell { n, adj, ops: ops.to_vec() })
    }

    /// Parses `ROWS:OPS` (see the module docs).
    pub fn parse(spec: &str) -> Result<Cell> {
        let bad = |msg: &str| bad_spec(Space::Nb101, spec, msg);
        let (rows, ops) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected ROWS:OPS, e.g. 0110/0001/0001/0000:input,...,output"))?;
        Cell::from_rows_ops(rows, ops).map_err(|e| match e {
            crate::Error::BadSpec { msg, .. } => bad(&msg),
            e => e,
        })
    }

    /// A cell from matrix rows joined by `/` (`0110001/0000010/...`) and comma-separated op
    /// names, the form of `nb101_space_all_423624.tsv.gz`.
    pub fn from_rows_ops(rows: &str, ops: &str) -> Result<Cell> {
        let spec = format!("{rows}:{ops}");
        let matrix: Vec<Vec<u8>> = rows
            .trim()
            .split('/')
            .map(|r| {
                r.bytes()
                    .map(|c| match c {
                        b'0' => Ok(0),
                        b'1' => Ok(1),
                        _ => Err(bad_spec(
                            Space::Nb101,
                            &spec,
                            format!("matrix row '{r}' has a character other than 0 or 1"),
                        )),
                    })
                    .collect()
            })
            .collect::<Result<_>>()?;
        let ops: Vec<Op> = ops
            .split(',')
            .map(|o| {
                Op::from_name(o)
                    .ok_or_else(|| bad_spec(Space::Nb101, &spec, format!("unknown op '{o}'")))
            })
            .collect::<Result<_>>()?;
        Cell::new(&matrix, &ops)
    }

    /// A cell from NASLib's tuple: the `n*n` flattened matrix followed by `n` op ids
    /// (see [`Op::from_naslib_id`]).
    pub fn from_naslib_tuple(t: &[u8]) -> Result<Cell> {
        let spec = format!("{t:?}");
        let n = (1..=MAX_VERTICES).find(|n| n * n + n == t.len()).ok_or_else(|| {
            bad_spec(Space::Nb101, &spec, "length is not n*n + n for n <= 7".to_string())
        })?;
        let matrix: Vec<Vec<u8>> = t[..n * n].chunks(n).map(|r| r.to_vec()).collect();
        let ops: Vec<Op> = t[n * n..]
            .iter()
            .map(|&id| {
                Op::from_naslib_id(id)
                    .ok_or_else(|| bad_spec(Space::Nb101, &spec, format!("unknown op id {id}")))
            })
            .collect::<Result<_>>()?;
        Cell::new(&matrix, &ops)
    }

    /// Number of vertices.
    pub fn num_vertices(&self) -> usize {
        self.n
    }

    /// The ops, one per vertex.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether there is an edge `i -> j`.
    pub fn edge(&self, i: usize, j: usize) -> bool {
        i < self.n && j < self.n && self.adj[i * self.n + j]
    }

    /// Number of edges.
    pub fn num_edges(&self) -> usize {
        self.adj.iter().filter(|&&e| e).count()
    }

    /// The matrix as rows of 0/1.
    pub fn matrix(&self) -> Vec<Vec<u8>> {
        (0..self.n).map(|i| (0..self.n).map(|j| u8::from(self.edge(i, j))).collect()).collect()
    }

    /// The spec string `ROWS:OPS`.
    pub fn spec(&self) -> String {
        let rows: Vec<String> = (0..self.n)
            .map(|i| (0..self.n).map(|j| if self.edge(i, j) { '1' } else { '0' }).collect())
            .collect();
        let ops: Vec<&str> = self.ops.iter().map(|o| o.name()).collect();
        format!("{}:{}", rows.join("/"), ops.join(","))
    }

    /// The cell with every vertex that is not on an input -> output path removed, as
    /// NAS-Bench-101's `ModelSpec` prunes. An error when the input does not reach the output.
    pub fn prune(&self) -> Result<Cell> {
        let n = self.n;
        let mut from_input = vec![false; n];
        from_input[0] = true;
        for v in 0..n {
            if from_input[v] {
                for (w, reached) in from_input.iter_mut().enumerate().skip(v + 1) {
                    *reached |= self.edge(v, w);
                }
            }
        }
        let mut to_output = vec![false; n];
        to_output[n - 1] = true;
        for v in (0..n).rev() {
            if to_output[v] {
                for (u, reaches) in to_output.iter_mut().enumerate().take(v) {
                    *reaches |= self.edge(u, v);
                }
            }
        }
        let keep: Vec<usize> = (0..n).filter(|&v| from_input[v] && to_output[v]).collect();
        if !from_input[n - 1] {
            return Err(bad_spec(
                Space::Nb101,
                &self.spec(),
                "the input does not reach the output",
            ));
        }
        let m = keep.len();
        let mut adj = vec![false; m * m];
        for (a, &i) in keep.iter().enumerate() {
            for (b, &j) in keep.iter().enumerate() {
                adj[a * m + b] = self.edge(i, j);
            }
        }
        Ok(Cell { n: m, adj, ops: keep.iter().map(|&v| self.ops[v]).collect() })
    }

    /// Whether every vertex lies on an input -> output path.
    pub fn is_pruned(&self) -> bool {
        self.prune().map(|p| p.n == self.n).unwrap_or(false)
    }

    /// NAS-Bench-101's module hash (md5 hex) of the pruned cell: the benchmark's key for a
    /// cell. See [`Cell::module_hash`] for the algorithm.
    pub fn hash(&self) -> Result<String> {
        Ok(self.prune()?.module_hash())
    }

    /// NAS-Bench-101's `hash_module` of this matrix and labelling, as it is (no pruning):
    /// each vertex starts as md5 of Python's `str((out_degree, in_degree, label))`; then `n`
    /// times, each vertex becomes md5 of its sorted in-neighbour hashes joined, `|`, its sorted
    /// out-neighbour hashes joined, `|`, its own hash; the fingerprint is md5 of Python's
    /// `str(sorted(hashes))`.
    pub fn module_hash(&self) -> String {
        let n = self.n;
        let mut hashes: Vec<[u8; 32]> = (0..n)
            .map(|v| {
                let out_deg = (0..n).filter(|&w| self.edge(v, w)).count();
                let in_deg = (0..n).filter(|&u| self.edge(u, v)).count();
                let s = format!("({out_deg}, {in_deg}, {})", self.ops[v].hash_label());
                md5_hex(s.as_bytes())
            })
            .collect();
        let mut buf: Vec<u8> = Vec::with_capacity(32 * (2 * n + 1) + 2);
        let mut ins: Vec<[u8; 32]> = Vec::with_capacity(n);
        let mut outs: Vec<[u8; 32]> = Vec::with_capacity(n);
        for _ in 0..n {
            let mut next = Vec::with_capacity(n);
            for v in 0..n {
                ins.clear();
                outs.clear();
                ins.extend((0..n).filter(|&w| self.edge(w, v)).map(|w| hashes[w]));
                outs.extend((0..n).filter(|&w| self.edge(v, w)).map(|w| hashes[w]));
                ins.sort_unstable();
                outs.sort_unstable();
                buf.clear();
                ins.iter().for_each(|h| buf.extend_from_slice(h));
                buf.push(b'|');
                outs.iter().for_each(|h| buf.extend_from_slice(h));
                buf.push(b'|');
                buf.extend_from_slice(&hashes[v]);
                next.push(md5_hex(&buf));
            }
            hashes = next;
        }
        hashes.sort_unstable();
        buf.clear();
        buf.push(b'[');
        for (i, h) in hashes.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(b", ");
            }
            buf.push(b'\'');
            buf.extend_from_slice(h);
            buf.push(b'\'');
        }
        buf.push(b']');
        String::from_utf8_lossy(&md5_hex(&buf)).into_owned()
    }
}

/// md5 of `data` as 32 lowercase hex digits.
fn md5_hex(data: &[u8]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Md5::digest(data);
    let mut out = [0u8; 32];
    for (i, byte) in d.iter().enumerate() {
        out[2 * i] = HEX[(byte >> 4) as usize];
        out[2 * i + 1] = HEX[(byte & 15) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::write::Weights;

    /// The published test vector of `nasbench101/SOURCE.md` (NAS-Bench-101's own example).
    const VECTOR_ROWS: &str = "0100110/0010000/0001001/0000010/0000010/0000001/0000000";
    const VECTOR_OPS: &str =
        "input,conv3x3-bn-relu,maxpool3x3,conv3x3-bn-relu,conv3x3-bn-relu,conv1x1-bn-relu,output";
    const VECTOR_HASH: &str = "00005c142e6f48ac74fdcf73e3439874";
    const VECTOR_PARAMS: u64 = 8_555_530;

    #[test]
    fn hash_reproduces_the_published_test_vector() {
        let c = Cell::from_rows_ops(VECTOR_ROWS, VECTOR_OPS).unwrap();
        assert_eq!(c.hash().unwrap(), VECTOR_HASH);
    }

    #[test]
    fn builder_reproduces_the_published_parameter_count() {
        let c = Cell::from_rows_ops(VECTOR_ROWS, VECTOR_OPS).unwrap();
        assert_eq!(c.build(Weights::Inputs).unwrap().params, VECTOR_PARAMS);
    }

    #[test]
    fn spec_round_trips() {
        let c = Cell::from_rows_ops(VECTOR_ROWS, VECTOR_OPS).unwrap();
        assert_eq!(Cell::parse(&c.spec()).unwrap(), c);
        assert_eq!(c.spec(), format!("{VECTOR_ROWS}:{VECTOR_OPS}"));
    }

    #[test]
    fn pruning_removes_dangling_vertices_and_keeps_the_hash() {
        // vertex 2 is a dead end (no path to the output); vertex 3 is unreachable from input
        let c = Cell::from_rows_ops(
            "01001/00101/00000/00001/00000",
            "input,conv3x3-bn-relu,maxpool3x3,conv1x1-bn-relu,output",
        )
        .unwrap();
        assert!(!c.is_pruned());
        let p = c.prune().unwrap();
        assert_eq!(p.spec(), "011/001/000:input,conv3x3-bn-relu,output");
        assert_eq!(c.hash().unwrap(), p.hash().unwrap());
        assert!(p.is_pruned());
    }

    #[test]
    fn disconnected_and_malformed_cells_are_errors_not_panics() {
        let c = Cell::from_rows_ops("010/000/000", "input,conv3x3-bn-relu,output").unwrap();
        assert!(c.prune().is_err());
        assert!(c.build(Weights::Inputs).is_err());
        for bad in [
            "01/00",
            "01/00:input",
            "01/10:input,output",
            "02/00:input,output",
            "011/001/000:input,bogus,output",
            "011/001/000:conv3x3-bn-relu,input,output",
            "0111/0011/0001/0000:input,output,conv1x1-bn-relu,output",
        ] {
            assert!(Cell::parse(bad).is_err(), "{bad}");
        }
        // 10 edges
        let ten = "01111111/00111111/00011111/00001111/00000111/00000011/00000001/00000000";
        assert!(Cell::parse(&format!("{ten}:input,output")).is_err());
    }

    #[test]
    fn vertex_channels_split_the_output_and_take_successor_maxima() {
        // 0 -> 1 -> 2 -> out, 0 -> 3 -> out, 1 -> out: out fan-in 3 (vertices 1, 2, 3)
        let c = Cell::from_rows_ops(
            "01010/00101/00001/00001/00000",
            "input,conv3x3-bn-relu,conv3x3-bn-relu,conv1x1-bn-relu,output",
        )
        .unwrap();
        let vc = c.vertex_channels(128, 128);
        assert_eq!(vc, vec![128, 43, 43, 42, 128]);
        let c =
            Cell::from_rows_ops("0100/0010/0001/0000", "input,conv3x3-bn-relu,maxpool3x3,output")
                .unwrap();
        assert_eq!(c.vertex_channels(64, 128), vec![64, 128, 128, 128]);
    }

    #[test]
    fn naslib_tuple_matches_the_matrix_form() {
        let c = Cell::from_rows_ops(VECTOR_ROWS, VECTOR_OPS).unwrap();
        let mut t: Vec<u8> = c.matrix().concat();
        t.extend([0, 4, 2, 4, 4, 3, 1]);
        assert_eq!(Cell::from_naslib_tuple(&t).unwrap(), c);
    }
}
