//! A direct shape analysis for the graphs exporters write most: convolutional and transformer
//! networks whose shape computations the exporter already folded (PyTorch's
//! `do_constant_folding`, the dynamo exporter's optimiser). One pass in file order over a closed
//! set of ops whose output shapes follow from their input shapes and attributes alone.
//!
//! tract's analysis (a rule solver over every tensor) gives the same facts for these graphs and
//! takes most of the time of reading one. [`analyse`] answers `None` whenever a graph steps
//! outside what it knows (an op not in the set, an attribute it does not read, a node computed
//! from constants alone, which tract would fold to a value, a shape that does not fit), and the
//! caller then runs tract: nothing is guessed. `tests` compare both on every committed file.

use super::analyse::{guarded, Fact, Facts};
use super::HashMap;
use crate::graph::Shape;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// Facts of every tensor when every node is one this module knows; `None` otherwise.
/// `bind` gives the fact of each graph input that is not an initializer.
pub(super) fn analyse(
    graph: &pb::GraphProto,
    bind: &dyn Fn(&str) -> crate::Result<InferenceFact>,
) -> Option<Facts> {
    let mut table: HashMap<String, Fact> =
        HashMap::with_capacity_and_hasher(graph.node.len() * 2, Default::default());
    for t in &graph.initializer {
        if t.data_location == Some(1) {
            return None; // external data: tract reads it
        }
        let value = initializer(t)?;
        let fact = Fact {
            shape: Some(value.shape().to_vec()),
            datum_type: Some(value.datum_type()),
            value: Some(Arc::new(value)),
        };
        table.insert(t.name.clone(), fact);
    }
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|v| !table.contains_key(&v.name)).collect();
    for vi in inputs {
        let f = bind(&vi.name).ok()?;
        let shape = super::analyse::concrete_shape(&f)?;
        let fact = Fact { shape: Some(shape), datum_type: f.datum_type.concretize(), value: None };
        table.insert(vi.name.clone(), fact);
    }
    for n in &graph.node {
        let (name, fact) = node(n, &table)?;
        table.insert(name, fact);
    }
    Some(Facts { table, unknown: 0, error: None })
}

/// An initializer as tract reads it (tract panics on a few malformed tensors: not here).
pub(super) fn initializer(t: &pb::TensorProto) -> Option<Tensor> {
    guarded("", || {
        let resolver = tract_onnx::data_resolver::FopenDataResolver;
        tract_onnx::tensor::load_tensor(&resolver, t, None)
            .map_err(|e| crate::Error::InvalidOnnx { path: String::new(), msg: e.to_string() })
    })
    .ok()
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn int(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}

/// Only these attributes are read or harmless (they change values, not shapes).
fn attrs_known(n: &pb::NodeProto, known: &[&str]) -> bool {
    n.attribute.iter().all(|a| known.contains(&a.name.as_str()))
}

const UNARY: &[&str] = &[
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Erf",
    "Softplus",
    "Softsign",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Gelu",
    "Mish",
    "Identity",
    "Dropout",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Sin",
    "Cos",
    "Softmax",
    "LogSoftmax",
    "BatchNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "LRN",
    "Clip",
];
const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"];

/// One node's output (name and fact), when this module knows the node.
fn node(n: &pb::NodeProto, table: &HashMap<String, Fact>) -> Option<(String, Fact)> {
    if n.output.len() != 1 || (!n.domain.is_empty() && n.domain != "ai.onnx") {
        return None;
    }
    if n.op_type == "Constant" {
        let t = attr(n, "value").filter(|_| n.attribute.len() == 1)?.t.as_ref()?;
        let value = initializer(t)?;
        let fact = Fact {
            shape: Some(value.shape().to_vec()),
            datum_type: Some(value.datum_type()),
            value: Some(Arc::new(value)),
        };
        return Some((n.output[0].clone(), fact));
    }
    let ins: Vec<&Fact> =
        n.input.iter().filter(|i| !i.is_empty()).map(|i| table.get(i)).collect::<Option<_>>()?;
    let first = ins.first()?;
    if ins.iter().all(|f| f.value.is_some()) {
        return None; // tract folds these to values
    }
    let x = first.shape.as_ref()?;
    let shape = shape_of(n, x, &ins)?;
    Some((
        n.output[0].clone(),
        Fact { shape: Some(shape), datum_type: first.datum_type, value: None },
    ))
}

/// The output shape of `n` whose first input has shape `x`.
fn shape_of(n: &pb::NodeProto, x: &[usize], ins: &[&Fact]) -> Option<Shape> {
    let op = n.op_type.as_str();
    if UNARY.contains(&op) {
        return Some(x.to_vec()); // (their attributes change values, not shapes)
    }
    if BINARY.contains(&op) {
        return ins
            .iter()
            .skip(1)
            .try_fold(x.to_vec(), |acc, f| broadcast(&acc, f.shape.as_ref()?));
    }
    match op {
        "Conv" => conv(n, x, ins.get(1)?.shape.as_ref()?),
        "MaxPool" | "AveragePool" => pool(n, x),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            (x.len() >= 3).then(|| x[..2].iter().copied().chain(x[2..].iter().map(|_| 1)).collect())
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => reduce(n, x, ins),
        "Reshape" => reshape(n, x, ins.get(1)?.value.as_ref()?),
        "Flatten" => {
            let axis = axis(int(n, "axis", 1), x.len() + 1)?;
            attrs_known(n, &["axis"])
                .then(|| vec![x[..axis].iter().product(), x[axis..].iter().product()])
        }
        "Gemm" => gemm(n, x, ins.get(1)?.shape.as_ref()?),
        "MatMul" => matmul(x, ins.get(1)?.shape.as_ref()?),
        "Concat" => concat(n, ins),
        "Transpose" => {
            let perm = ints(n, "perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
            let idx: Option<Vec<usize>> = perm.iter().map(|&p| axis(p, x.len())).collect();
            let idx = idx?;
            (idx.len() == x.len()).then(|| idx.iter().map(|&i| x[i]).collect())
        }
        _ => None,
    }
}

/// A possibly negative axis of a rank-`rank` tensor.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let a = if a < 0 { a + rank as i64 } else { a };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

fn broadcast(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (p, q) if p == q => Some(p),
            (1, q) => Some(q),
            (p, 1) => Some(p),
            _ => None,
        })
        .collect()
}

/// Spatial output sizes: `(in + pads - dilation * (k - 1) - 1) / stride + 1`, floored.
fn windows(n: &pb::NodeProto, x: &[usize], kernel: &[usize]) -> Option<Vec<usize>> {
    let s = x.len().checked_sub(2)?;
    if kernel.len() != s || attr(n, "auto_pad").is_some_and(|a| a.s != b"NOTSET") {
        return None;
    }
    let get = |name: &str, len: usize, default: i64| -> Option<Vec<i64>> {
        let v = ints(n, name).unwrap_or_else(|| vec![default; len]);
        (v.len() == len && v.iter().all(|&d| d >= 0)).then_some(v)
    };
    let (strides, pads, dil) =
        (get("strides", s, 1)?, get("pads", 2 * s, 0)?, get("dilations", s, 1)?);
    (0..s)
        .map(|i| {
            let span = dil[i] * (kernel[i] as i64 - 1) + 1;
            let room = x[i + 2] as i64 + pads[i] + pads[i + s] - span;
            (room >= 0 && strides[i] > 0).then(|| (room / strides[i] + 1) as usize)
        })
        .collect()
}

fn conv(n: &pb::NodeProto, x: &[usize], w: &[usize]) -> Option<Shape> {
    let known = ["kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"];
    let group = int(n, "group", 1);
    if !attrs_known(n, &known) || w.len() != x.len() || group < 1 || x[1] != w[1] * group as usize {
        return None;
    }
    let out = windows(n, x, &w[2..])?;
    Some([x[0], w[0]].into_iter().chain(out).collect())
}

fn pool(n: &pb::NodeProto, x: &[usize]) -> Option<Shape> {
    let known = [
        "kernel_shape",
        "strides",
        "pads",
        "dilations",
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "storage_order",
    ];
    if !attrs_known(n, &known) || int(n, "ceil_mode", 0) != 0 {
        return None;
    }
    let kernel: Vec<usize> =
        ints(n, "kernel_shape")?.iter().map(|&k| usize::try_from(k).ok()).collect::<Option<_>>()?;
    let out = windows(n, x, &kernel)?;
    Some(x[..2].iter().copied().chain(out).collect())
}

fn reduce(n: &pb::NodeProto, x: &[usize], ins: &[&Fact]) -> Option<Shape> {
    if !attrs_known(n, &["axes", "keepdims"]) {
        return None;
    }
    let axes: Vec<i64> = match ins.get(1) {
        Some(f) => int_values(f.value.as_ref()?)?,
        None => ints(n, "axes").unwrap_or_default(),
    };
    let mut axes: Vec<usize> = axes.iter().map(|&a| axis(a, x.len())).collect::<Option<_>>()?;
    if axes.is_empty() {
        axes = (0..x.len()).collect();
    }
    let keep = int(n, "keepdims", 1) != 0;
    Some(
        (0..x.len())
            .filter_map(|i| match (axes.contains(&i), keep) {
                (true, true) => Some(1),
                (true, false) => None,
                _ => Some(x[i]),
            })
            .collect(),
    )
}

fn reshape(n: &pb::NodeProto, x: &[usize], target: &Tensor) -> Option<Shape> {
    if !attrs_known(n, &["allowzero"]) || int(n, "allowzero", 0) != 0 {
        return None;
    }
    let spec = int_values(target)?;
    let mut out: Vec<usize> = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 => out.push(*x.get(i)?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            _ => return None,
        }
    }
    let total: usize = x.iter().product();
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return None;
        }
        out[i] = total / known;
    }
    (out.iter().product::<usize>() == total).then_some(out)
}

/// A tensor's values as i64 (shapes, axes).
pub(super) fn int_values(t: &Tensor) -> Option<Vec<i64>> {
    let c = t.cast_to::<i64>().ok()?;
    let v = c.to_plain_array_view::<i64>().ok()?.iter().copied().collect();
    Some(v)
}

fn gemm(n: &pb::NodeProto, a: &[usize], b: &[usize]) -> Option<Shape> {
    if !attrs_known(n, &["alpha", "beta", "transA", "transB"]) || a.len() != 2 || b.len() != 2 {
        return None;
    }
    let (m, k) = if int(n, "transA", 0) != 0 { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, cols) = if int(n, "transB", 0) != 0 { (b[1], b[0]) } else { (b[0], b[1]) };
    (k == k2).then(|| vec![m, cols])
}

fn matmul(a: &[usize], b: &[usize]) -> Option<Shape> {
    if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
        return None;
    }
    let batch = broadcast(&a[..a.len() - 2], &b[..b.len() - 2])?;
    Some(batch.into_iter().chain([a[a.len() - 2], b[b.len() - 1]]).collect())
}

fn concat(n: &pb::NodeProto, ins: &[&Fact]) -> Option<Shape> {
    let shapes: Vec<&Shape> = ins.iter().map(|f| f.shape.as_ref()).collect::<Option<_>>()?;
    let first = shapes.first()?;
    let ax = axis(int(n, "axis", i64::MIN), first.len())?;
    let mut out = (*first).clone();
    out[ax] = 0;
    for s in &shapes {
        if s.len() != out.len() || (0..s.len()).any(|i| i != ax && s[i] != out[i]) {
            return None;
        }
        out[ax] += s[ax];
    }
    attrs_known(n, &["axis"]).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::{analyse, bind, decode, external, inputs, slim, ImportOptions};
    use std::path::{Path, PathBuf};

    fn onnx_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("corpus folder").flatten() {
            let p = e.path();
            if p.is_dir() {
                onnx_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "onnx") {
                out.push(p);
            }
        }
    }

    /// Every committed file the direct analysis answers, read with and without weights, gets
    /// from it the shape, type and value tract's analysis gives each tensor.
    #[test]
    fn direct_analysis_agrees_with_tract_on_every_committed_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut files = Vec::new();
        onnx_files(&root, &mut files);
        files.sort();
        let (mut answered, mut compared) = (0, 0);
        for f in &files {
            let bytes = std::fs::read(f).expect("read");
            let src = f.display().to_string();
            for shapes_only in [false, true] {
                let bytes = if shapes_only {
                    slim::slim(&bytes, &src).expect("slim")
                } else {
                    bytes.clone()
                };
                let Ok(mut model) = decode(&bytes, &src) else { continue };
                if external::load_external(&mut model, f.parent(), &src).is_err() {
                    continue;
                }
                let graph = model.graph.as_ref().expect("graph");
                let Ok(ins) = inputs::classify(&model, graph, &src) else { continue };
                let opts = ImportOptions::default();
                let bind = |name: &str| {
                    bind::bind_input(name, graph, &ins.data, &ins.weights, &opts, &src)
                };
                let Some(direct) = super::analyse(graph, &bind) else { continue };
                answered += 1;
                let tract = analyse::analyse_twice(&model, &bind, &src).expect("tract");
                for (name, d) in &direct.table {
                    let Some(t) = tract.table.get(name) else { continue };
                    assert_eq!(d.shape, t.shape, "{src} ({shapes_only}): shape of {name}");
                    assert_eq!(d.datum_type, t.datum_type, "{src}: type of {name}");
                    assert_eq!(d.value.is_some(), t.value.is_some(), "{src}: value of {name}");
                    compared += 1;
                }
            }
        }
        assert!(answered >= 30, "the direct analysis answered only {answered} readings");
        assert!(compared >= 1000, "only {compared} tensors compared");
    }
}
