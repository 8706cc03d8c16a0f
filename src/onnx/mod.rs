//! ONNX in and out: the first stage of the pipeline (file -> [`Cg`]).
//!
//! [`load`] reads a model with tract-onnx, binds the input shape (from the model, or the
//! caller's; symbolic batch -> 1), lets tract's analyser infer a concrete shape for every
//! tensor, folds shape-computing subgraphs away (anything computed only from constants,
//! initializers and tensor shapes), drops pass-through ops (Identity, Dropout), and maps every
//! remaining ONNX node to one atomic [`OpKind`] with its attributes, shapes, parameter count
//! and FLOPs. [`write`] builds ONNX files for generated architectures.
//!
//! Parameters are the elements of float initializers (and of graph inputs that are weights: see
//! [`write::WEIGHT_INPUTS_KEY`]) consumed as weights. BatchNorm running statistics, Resize scales,
//! Clip bounds, shape operands and single-element constants are not parameters. A weight shared
//! by several nodes is counted once, at its first consumer in file order.

mod analyse;
mod bind;
mod bounded;
mod dequant;
mod external;
mod fused;
mod inputs;
mod layernorm;
mod lower;
mod lower_legacy;
mod map;
mod map_compute;
mod map_select;
mod nodes;
mod order;
mod rewrite;
pub mod run;
mod shapes;
pub mod slim;
mod slots;
mod tables;
mod tract_loop;
mod tract_ops;
mod widen;
pub mod write;

use crate::error::{Error, Result};
use crate::graph::{AttrValue, Cg, OpKind};
use std::path::Path;
use tract_onnx::pb;
use tract_onnx::prelude::*;

pub use write::WEIGHT_INPUTS_KEY;

/// Maps and sets keyed by tensor names while reading a file: foldhash, seeded per process, in
/// place of SipHash, which was a tenth of the instructions of `nape inspect` (docs/costs.md).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// How to read a model.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Shape to bind the (first) data input to, e.g. `[1, 3, 32, 32]`. When `None`, the model's
    /// declared shape is used, a leading symbolic dim (the batch) as 1.
    pub input_shape: Option<Vec<usize>>,
    /// Values of symbolic dims by name (`--dim sequence=128`), for every data input; see
    /// [`bind`] for how the rest are bound or refused.
    pub dims: Vec<(String, usize)>,
    /// Unknown ops are errors instead of `OpKind::Unknown` nodes.
    pub strict: bool,
    /// Read the weights' shapes, not their values ([`slim`]): for commands that do not run
    /// the network. The graph, counts and costs are the same.
    pub shapes_only: bool,
}

impl ImportOptions {
    /// What the bindings add to a cache's tag: `-shape1x3x224x224-dimsH=224,W=224`, or nothing.
    pub fn binding_tag(&self) -> String {
        let shape = self.input_shape.as_ref().map(|s| {
            let s: Vec<String> = s.iter().map(usize::to_string).collect();
            format!("-shape{}", s.join("x"))
        });
        shape.unwrap_or_default() + &self.dims_tag()
    }

    /// What the `--dim` bindings add to a cache's tag: `-dimsH=224,W=224`, or nothing.
    pub fn dims_tag(&self) -> String {
        if self.dims.is_empty() {
            return String::new();
        }
        let d: Vec<String> = self.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("-dims{}", d.join(","))
    }
}

/// Reads an ONNX file into a CG.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Cg> {
    if opts.shapes_only {
        let source = path.display().to_string();
        let model = decode(&slim::slim_file(path)?, &source)?;
        return load_model(path, model, opts);
    }
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    load_read(path, &bytes, opts)
}

/// The error of a file that cannot be read: missing data when it is not there.
fn read_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::MissingData {
            what: "ONNX file".into(),
            path: path.to_path_buf(),
            hint: String::new(),
        }
    } else {
        Error::io(path, e)
    }
}

/// [`load`] of a file whose bytes were already read (external data is read beside `path`).
pub fn load_read(path: &Path, bytes: &[u8], opts: &ImportOptions) -> Result<Cg> {
    let source = path.display().to_string();
    load_model(path, decode_as(bytes, &source, opts)?, opts)
}

/// A decoded model of the file `path`: its external data read beside it, then the CG.
fn load_model(path: &Path, mut model: pb::ModelProto, opts: &ImportOptions) -> Result<Cg> {
    let source = path.display().to_string();
    if external::has_external(&model) {
        let dir = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
        if opts.shapes_only {
            external::declare_external_weights(&mut model, dir, &source)?;
        }
        external::load_external(&mut model, dir, &source)?;
    }
    from_proto(&model, &source, opts)
}

/// [`decode`] of the whole bytes, or of their [`slim`] form when `opts` asks for shapes only.
fn decode_as(bytes: &[u8], source: &str, opts: &ImportOptions) -> Result<pb::ModelProto> {
    if opts.shapes_only {
        decode(&slim::slim(bytes, source)?, source)
    } else {
        decode(bytes, source)
    }
}

/// Decodes ONNX protobuf bytes; `source` names them in messages.
pub fn decode(bytes: &[u8], source: &str) -> Result<pb::ModelProto> {
    use prost::Message;
    if bytes.is_empty() {
        return Err(Error::InvalidOnnx { path: source.into(), msg: "the file is empty".into() });
    }
    let mut model = pb::ModelProto::decode(bytes).map_err(|e| Error::InvalidOnnx {
        path: source.into(),
        msg: format!("protobuf decoding failed ({e})"),
    })?;
    explicit_defaults(&mut model);
    widen::widen(&mut model);
    order::dependency_order(&mut model);
    dequant::dequantize(&mut model);
    fused::expand(&mut model);
    layernorm::fuse(&mut model);
    lower::lower(&mut model);
    match &model.graph {
        Some(g) if !g.node.is_empty() || !g.output.is_empty() => Ok(model),
        _ => Err(Error::InvalidOnnx {
            path: source.into(),
            msg: "the protobuf has no graph (is this an ONNX model file?)".into(),
        }),
    }
}

/// Writes out the ONNX defaults tract reads differently from the standard, so that every
/// runtime sees the same model: a ConstantOfShape without `value` makes float32 zeros (tract
/// 0.23 makes float64 ones, which then contradict the float32 tensors they are combined with,
/// e.g. in Swin's attention masks).
fn explicit_defaults(model: &mut pb::ModelProto) {
    let Some(graph) = model.graph.as_mut() else { return };
    drop_training_outputs(graph);
    for n in graph.node.iter_mut().filter(|n| n.op_type == "ConstantOfShape") {
        if n.attribute.iter().all(|a| a.name != "value") {
            n.attribute.push(pb::AttributeProto {
                name: "value".into(),
                r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                t: Some(pb::TensorProto {
                    dims: vec![1],
                    data_type: 1,
                    float_data: vec![0.0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
}

/// BatchNormalization in training mode has three outputs (the result and the updated running
/// mean and variance; PyTorch writes it for `F.batch_norm(..., training=True)`, e.g. timm's
/// weight standardisation). The extra two are dropped where nothing reads them, so tract sees
/// the one-output form; the result's shape is the same either way.
fn drop_training_outputs(graph: &mut pb::GraphProto) {
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    for n in graph.node.iter_mut().filter(|n| n.op_type == "BatchNormalization") {
        if n.output.len() > 1 && n.output[1..].iter().all(|o| o.is_empty() || !used.contains(o)) {
            n.output.truncate(1);
            n.attribute.retain(|a| a.name != "training_mode");
        }
    }
}

/// Whether an ONNX element type is a float: float, float16, double, bfloat16.
pub(super) fn is_float_type(t: i32) -> bool {
    matches!(t, 1 | 10 | 11 | 16)
}

/// The metadata key under which reading leaves a note for the CG: what it changed in the file
/// before reading it (its node order, a quantized network's float form).
const READ_NOTE_KEY: &str = "nape.read_note";

fn add_read_note(model: &mut pb::ModelProto, note: String) {
    model
        .metadata_props
        .push(pb::StringStringEntryProto { key: READ_NOTE_KEY.into(), value: note });
}

fn read_notes(model: &pb::ModelProto) -> impl Iterator<Item = String> + '_ {
    model.metadata_props.iter().filter(|p| p.key == READ_NOTE_KEY).map(|p| p.value.clone())
}

/// Reads ONNX bytes into a CG; `source` names them in messages.
pub fn load_bytes(bytes: &[u8], source: &str, opts: &ImportOptions) -> Result<Cg> {
    let mut model = decode_as(bytes, source, opts)?;
    external::load_external(&mut model, None, source)?;
    from_proto(&model, source, opts)
}

/// What we know about a tensor that is not an activation: a constant (initializer, Constant
/// node, or computed only from those and tensor shapes).
#[derive(Debug, Default, Clone)]
pub(super) struct Static {
    /// Whether it is floating point.
    pub(super) float: bool,
    /// Element count.
    pub(super) numel: u64,
    /// The parameter tensors (initializers or weight inputs) it is derived from.
    pub(super) sources: Vec<String>,
    /// Its value, when tract's analysis knows it.
    pub(super) value: Option<Arc<Tensor>>,
    /// Whether its value follows from the file alone (no weight input, which a file exported
    /// without weights leaves unknown, is among what it is computed from).
    pub(super) computable: bool,
}

/// Builds a CG from a decoded model, in stages: decide the `If`s the shapes decide, classify
/// the graph inputs, analyse shapes (directly where [`shapes`] knows every op, else with
/// tract), build the CG node by node, compute constants tract left without a value, tidy.
pub fn from_proto(model: &pb::ModelProto, source: &str, opts: &ImportOptions) -> Result<Cg> {
    match bounded::decide_ifs(model, source, opts)? {
        Some(decided) => build(&decided, source, opts),
        None => build(model, source, opts),
    }
}

/// [`from_proto`] of a model whose `If`s the shapes decide are replaced by their branches.
fn build(model: &pb::ModelProto, source: &str, opts: &ImportOptions) -> Result<Cg> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let graph = model.graph.as_ref().ok_or_else(|| invalid("no graph".into()))?;
    if graph.node.is_empty() {
        return Err(invalid("the graph has no nodes".into()));
    }
    inputs::sanity_check(graph, source)?;
    let inputs = inputs::classify(model, graph, source)?;
    let bind =
        |name: &str| bind::bind_input(name, graph, &inputs.data, &inputs.weights, opts, source);
    let facts = match shapes::analyse(graph, &bind) {
        Some(facts) => facts,
        None => {
            tracing::debug!(
                "{source}: shapes by tract's analysis (an op or form the direct one does not know)"
            );
            analyse::analyse_twice(model, &bind, source)?
        }
    };
    let mut b = nodes::Builder::new(source, &facts, graph, &inputs.weights, opts.strict);
    b.data_inputs(&inputs.data)?;
    for (index, pn) in graph.node.iter().enumerate() {
        b.node(index, pn)?;
    }
    b.outputs(graph)?;
    let notes = b.notes();
    let undecided = b.undecided_params();
    let (mut cg, unfolded) = (b.cg, b.unfolded);
    cg.undecided_params = undecided;
    for note in read_notes(model).chain(notes) {
        tracing::warn!("{source}: {note}");
        cg.notes.push(note);
    }
    if !inputs.inferred.is_empty() {
        let n = inputs.inferred.len();
        let first: Vec<&str> = inputs.inferred.iter().take(3).map(String::as_str).collect();
        let note = format!(
            "{n} graph inputs taken as weights by how they are used (e.g. {}); the file does not list them under {WEIGHT_INPUTS_KEY}",
            first.join(", ")
        );
        tracing::warn!("{source}: {note}");
        cg.notes.push(note);
    }
    if !unfolded.is_empty() {
        analyse::fill_folded(&mut cg, model, &unfolded, &bind, source);
    }
    prune_dead(&mut cg);
    if let Some(note) = bounded::note(&cg) {
        tracing::warn!("{source}: {note}");
        cg.notes.push(note);
    }
    cg.fuse_activations();
    cg.sort().map_err(|e| invalid(e.to_string()))?;
    cg.validate().map_err(|e| Error::Shape { path: source.into(), msg: e.to_string() })?;
    Ok(cg)
}

/// An ONNX attribute as a name and value (graphs and tensors as attributes are left out).
pub(super) fn attr_value(a: &pb::AttributeProto) -> Option<(String, AttrValue)> {
    let v = match a.r#type {
        1 => AttrValue::Float(a.f as f64),
        2 => AttrValue::Int(a.i),
        3 => AttrValue::Str(String::from_utf8_lossy(&a.s).into_owned()),
        6 => AttrValue::Floats(a.floats.iter().map(|&f| f as f64).collect()),
        7 => AttrValue::Ints(a.ints.clone()),
        _ if !a.ints.is_empty() => AttrValue::Ints(a.ints.clone()),
        _ if !a.floats.is_empty() => {
            AttrValue::Floats(a.floats.iter().map(|&f| f as f64).collect())
        }
        _ if !a.s.is_empty() => AttrValue::Str(String::from_utf8_lossy(&a.s).into_owned()),
        _ => return None,
    };
    Some((a.name.clone(), v))
}

/// Removes compute nodes whose results reach no output (dead code in the file).
fn prune_dead(cg: &mut Cg) {
    use petgraph::visit::NodeIndexable;
    use petgraph::Direction;
    let g = &mut cg.graph;
    let mut live = vec![false; g.node_bound()];
    let mut stack: Vec<_> = g.node_indices().filter(|&n| g[n].kind == OpKind::Output).collect();
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut live[n.index()], true) {
            continue;
        }
        stack.extend(g.neighbors_directed(n, Direction::Incoming));
    }
    let dead: Vec<_> =
        g.node_indices().filter(|n| !live[n.index()] && g[*n].kind != OpKind::Input).collect();
    for n in dead {
        g.remove_node(n);
    }
}

/// A node of `op` in `domain` reading `input`, writing `output` (named after it), for tests.
#[cfg(test)]
fn test_node(op: &str, input: &[&str], output: &str, domain: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        domain: domain.into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn constant_of_shape_model(attrs: Vec<pb::AttributeProto>) -> Vec<u8> {
        let node = pb::NodeProto {
            op_type: "ConstantOfShape".into(),
            name: "c".into(),
            input: vec!["shape".into()],
            output: vec!["y".into()],
            attribute: attrs,
            ..Default::default()
        };
        let graph = pb::GraphProto { node: vec![node], ..Default::default() };
        pb::ModelProto { graph: Some(graph), ..Default::default() }.encode_to_vec()
    }

    /// One float input `x` of `x_dims`, the nodes `(op, inputs, output)`, initializers of
    /// distinct values, output `y`; read as nape reads a file.
    fn read(x_dims: &[usize], nodes: &[(&str, &[&str], &str)], inits: &[(&str, &[i64])]) -> Cg {
        read_with(x_dims, nodes, inits, |i| 0.5 + i as f32)
    }

    /// An initializer's value at each flat index.
    type Values = fn(i64) -> f32;

    /// [`read`] with initializer values `value(i)`.
    fn read_with(
        x_dims: &[usize],
        nodes: &[(&str, &[&str], &str)],
        inits: &[(&str, &[i64])],
        value: Values,
    ) -> Cg {
        let bytes = model_bytes(x_dims, nodes, inits, value);
        load_bytes(&bytes, "t.onnx", &ImportOptions::default()).expect("reads")
    }

    /// The file [`read_with`] reads.
    fn model_bytes(
        x_dims: &[usize],
        nodes: &[(&str, &[&str], &str)],
        inits: &[(&str, &[i64])],
        value: Values,
    ) -> Vec<u8> {
        let node = nodes
            .iter()
            .map(|(op, ins, out)| pb::NodeProto {
                op_type: op.to_string(),
                name: out.to_string(),
                input: ins.iter().map(|s| s.to_string()).collect(),
                output: vec![out.to_string()],
                ..Default::default()
            })
            .collect();
        let initializer = inits
            .iter()
            .map(|(name, dims)| pb::TensorProto {
                name: name.to_string(),
                dims: dims.to_vec(),
                data_type: 1,
                // raw data after the name, as exporters write it
                raw_data: (0..dims.iter().product::<i64>())
                    .flat_map(|i| value(i).to_le_bytes())
                    .collect(),
                ..Default::default()
            })
            .collect();
        let graph = pb::GraphProto {
            node,
            initializer,
            input: vec![write::value_info("x", x_dims)],
            output: vec![write::value_info("y", &[])],
            ..Default::default()
        };
        let opset = vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        pb::ModelProto {
            ir_version: 8,
            graph: Some(graph),
            opset_import: opset,
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// The shapes-only reader, on `nodes` reading a weight `W` of 16 x 16 (more than
    /// slim::KEEP_ELEMENTS values, whose data it drops unless it must decide from them): one
    /// parameter of varied values, two of equal values.
    fn shapes_only_decides_as_a_full_read(nodes: &[(&str, &[&str], &str)]) {
        let opts = ImportOptions { shapes_only: true, ..Default::default() };
        let cases: [(Values, u64); 2] = [(|i| 0.5 + i as f32, 256), (|_| 1.0, 512)];
        for (value, params) in cases {
            let bytes = model_bytes(&[1, 16], nodes, &[("W", &[16, 16])], value);
            let cg = load_bytes(&bytes, "t.onnx", &opts).expect("reads");
            assert_eq!(cg.summary().params, params);
        }
    }

    #[test]
    fn identity_copies_of_a_weight_are_shared_only_when_their_values_vary() {
        let nodes: &[(&str, &[&str], &str)] = &[
            ("Identity", &["W"], "W2"),
            ("MatMul", &["x", "W"], "a"),
            ("MatMul", &["a", "W2"], "y"),
        ];
        // varied values: one parameter used twice (weight sharing), counted once
        let cg = read(&[1, 4], nodes, &[("W", &[4, 4])]);
        assert_eq!((cg.summary().params, cg.notes.len()), (16, 0), "{:?}", cg.notes);
        assert_eq!(cg.summary().undecided_params, 0);
        // all equal (a zero-initialised layer): distinct parameters that share initial values
        let cg = read_with(&[1, 4], nodes, &[("W", &[4, 4])], |_| 0.0);
        assert_eq!(cg.summary().params, 32);
        assert_eq!(cg.summary().undecided_params, 16);
        assert_eq!(cg.notes.len(), 1, "{:?}", cg.notes);
        assert!(
            cg.notes[0].starts_with("1 weights (16 values) are Identity copies"),
            "{:?}",
            cg.notes
        );
        // the shapes-only reader keeps the data of a weight an Identity reads, so it decides
        // the same (a weight of more than slim::KEEP_ELEMENTS values, whose data it drops)
        shapes_only_decides_as_a_full_read(nodes);
    }

    #[test]
    fn a_weight_read_by_two_nodes_is_one_parameter_unless_its_values_are_all_equal() {
        // ONNX Runtime's optimiser merges initializers of equal values: an untrained network's
        // LayerNorm scales (all ones) become one tensor read by every LayerNorm
        let nodes: &[(&str, &[&str], &str)] =
            &[("MatMul", &["x", "W"], "a"), ("MatMul", &["a", "W"], "y")];
        let cg = read(&[1, 4], nodes, &[("W", &[4, 4])]);
        assert_eq!((cg.summary().params, cg.notes.len()), (16, 0), "{:?}", cg.notes);
        let cg = read_with(&[1, 4], nodes, &[("W", &[4, 4])], |_| 1.0);
        assert_eq!((cg.summary().params, cg.summary().undecided_params), (32, 16));
        assert!(cg.notes[0].contains("or one weight read by several nodes"), "{:?}", cg.notes);
        // the shapes-only reader keeps the data of a weight two nodes read, so it decides the
        // same for a weight of more than slim::KEEP_ELEMENTS values
        shapes_only_decides_as_a_full_read(nodes);
    }

    #[test]
    fn a_gathered_relative_position_bias_counts_as_its_table_and_says_so() {
        // scores = x x over 2 heads of 4 = 2 x 2 positions; the bias holds [1, 2, 4, 4]
        let nodes: &[(&str, &[&str], &str)] =
            &[("MatMul", &["x", "x"], "scores"), ("Add", &["scores", "bias"], "y")];
        let mut cg = read(&[1, 2, 4, 4], nodes, &[("bias", &[1, 2, 4, 4])]);
        assert_eq!(cg.summary().params, 2 * 9, "3 x 3 offsets per head");
        assert!(cg.notes[0].contains("counted as their tables, 18 parameters, not the 32"));
        // the same bias added to the input itself is an ordinary parameter
        cg = read(&[1, 2, 4, 4], &[("Add", &["x", "bias"], "y")], &[("bias", &[1, 2, 4, 4])]);
        assert_eq!((cg.summary().params, cg.notes.len()), (32, 0));
    }

    #[test]
    fn constant_of_shape_without_value_reads_as_float32_zero() {
        let m = decode(&constant_of_shape_model(vec![]), "t").expect("decode");
        let a = &m.graph.as_ref().expect("graph").node[0].attribute;
        assert_eq!(a.len(), 1);
        let t = a[0].t.as_ref().expect("tensor");
        assert_eq!(
            (a[0].name.as_str(), t.data_type, t.float_data.as_slice()),
            ("value", 1, &[0.0][..])
        );
    }

    #[test]
    fn constant_of_shape_with_a_value_is_left_alone() {
        let value = pb::AttributeProto {
            name: "value".into(),
            r#type: pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(pb::TensorProto {
                dims: vec![1],
                data_type: 7,
                int64_data: vec![3],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = decode(&constant_of_shape_model(vec![value.clone()]), "t").expect("decode");
        assert_eq!(m.graph.as_ref().expect("graph").node[0].attribute, vec![value]);
    }
}
