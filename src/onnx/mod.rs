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

mod map;
pub mod run;
pub mod write;

use crate::error::{Error, Result};
use crate::graph::{AttrValue, Cg, ConstValue, OpKind, OpNode, Operand, Shape, TensorEdge};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{Factoid, InferenceModelExt};

pub use write::WEIGHT_INPUTS_KEY;

/// How to read a model.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Shape to bind the (first) data input to, e.g. `[1, 3, 32, 32]`. When `None`, the model's
    /// declared shape is used with symbolic dimensions set to 1.
    pub input_shape: Option<Vec<usize>>,
    /// Unknown ops are errors instead of `OpKind::Unknown` nodes.
    pub strict: bool,
}

/// Reads an ONNX file into a CG.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Cg> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingData {
                what: "ONNX file".into(),
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    load_bytes(&bytes, &path.display().to_string(), opts)
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

/// Reads ONNX bytes into a CG; `source` names them in messages.
pub fn load_bytes(bytes: &[u8], source: &str, opts: &ImportOptions) -> Result<Cg> {
    let model = decode(bytes, source)?;
    from_proto(&model, source, opts)
}

/// What we know about a tensor that is not an activation: a constant (initializer, Constant
/// node, or computed only from those and tensor shapes).
#[derive(Debug, Default, Clone)]
struct Static {
    /// Whether it is floating point.
    float: bool,
    /// Element count.
    numel: u64,
    /// The parameter tensors (initializers or weight inputs) it is derived from.
    sources: Vec<String>,
    /// Its value, when tract's analysis knows it.
    value: Option<Arc<Tensor>>,
    /// Whether its value follows from the file alone (no weight input, which a file exported
    /// without weights leaves unknown, is among what it is computed from).
    computable: bool,
}

/// Builds a CG from a decoded model.
pub fn from_proto(model: &pb::ModelProto, source: &str, opts: &ImportOptions) -> Result<Cg> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let graph = model.graph.as_ref().ok_or_else(|| invalid("no graph".into()))?;
    if graph.node.is_empty() {
        return Err(invalid("the graph has no nodes".into()));
    }
    sanity_check(graph, source)?;
    let initializers: HashMap<&str, &pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let declared_weights: HashSet<&str> = model
        .metadata_props
        .iter()
        .filter(|p| p.key == WEIGHT_INPUTS_KEY)
        .flat_map(|p| p.value.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .collect();
    let weight_slots = weight_like_inputs(graph, &initializers);
    // graph inputs: data inputs vs weight inputs
    // the weight-slot heuristic applies only if it leaves at least one data input
    let heuristic_leaves_data =
        data_inputs_exist(graph, &initializers, &declared_weights, &weight_slots);
    let mut data_inputs = Vec::new();
    let mut weight_inputs: HashMap<&str, Vec<usize>> = HashMap::new();
    for vi in &graph.input {
        if initializers.contains_key(vi.name.as_str()) {
            continue;
        }
        let dims = declared_dims(vi);
        if declared_weights.contains(vi.name.as_str())
            || (weight_slots.contains(vi.name.as_str()) && heuristic_leaves_data)
        {
            let dims: Option<Vec<usize>> = dims.iter().map(|d| d.map(|v| v as usize)).collect();
            let dims = dims.ok_or_else(|| {
                invalid(format!("weight input '{}' has a symbolic shape", vi.name))
            })?;
            weight_inputs.insert(vi.name.as_str(), dims);
        } else {
            data_inputs.push(vi);
        }
    }
    if data_inputs.is_empty() {
        return Err(invalid("the graph has no data input".into()));
    }

    // tract: parse, bind inputs, analyse. The file's value_info helps tract's analysis (Swin's
    // exports need it) but its symbolic dims can contradict the bound input shape: try with it,
    // and without it when that leaves tensors unknown.
    let bind = |name: &str| bind_input(name, graph, &data_inputs, &weight_inputs, opts, source);
    let mut facts = guarded(source, || analyse(model, false, &bind, source))?;
    if facts.unknown > 0 {
        tracing::debug!("{source}: {} tensors without shape after the first analysis; retrying without value_info", facts.unknown);
        let second = guarded(source, || analyse(model, true, &bind, source))?;
        if second.unknown < facts.unknown {
            facts = second;
        }
    }
    let fact_of = |name: &str| facts.table.get(name);
    let shape_of = |name: &str| -> Option<Shape> { fact_of(name).and_then(|f| f.shape.clone()) };

    // statics: initializers, weight inputs, and everything computed from them only
    let mut statics: HashMap<String, Static> = HashMap::new();
    for t in &graph.initializer {
        let numel = t.dims.iter().map(|&d| d.max(0) as u64).product();
        let float = matches!(t.data_type, 1 | 10 | 11 | 16);
        statics.insert(
            t.name.clone(),
            Static {
                float,
                numel,
                sources: vec![t.name.clone()],
                value: fact_of(&t.name).and_then(|f| f.value.clone()),
                computable: true,
            },
        );
    }
    for (name, dims) in &weight_inputs {
        let numel = dims.iter().map(|&d| d as u64).product();
        statics.insert(
            name.to_string(),
            Static {
                float: true,
                numel,
                sources: vec![name.to_string()],
                value: None,
                computable: false,
            },
        );
    }

    let mut cg = Cg::new(source);
    // tensor name -> (producing CG node, output slot)
    let mut producer: HashMap<String, (petgraph::stable_graph::NodeIndex, usize)> = HashMap::new();
    for vi in &data_inputs {
        let shape = shape_of(&vi.name).ok_or_else(|| Error::Shape {
            path: source.into(),
            msg: format!("input '{}' has no concrete shape", vi.name),
        })?;
        let mut node = OpNode::new(OpKind::Input, vi.name.clone());
        node.out_shapes = vec![shape];
        let n = cg.graph.add_node(node);
        producer.insert(vi.name.clone(), (n, 0));
    }
    // alias: a pass-through op's output is its input
    let mut alias: HashMap<String, String> = HashMap::new();
    let resolve = |alias: &HashMap<String, String>, mut t: String| {
        while let Some(a) = alias.get(&t) {
            t = a.clone();
        }
        t
    };
    let mut claimed: HashSet<String> = HashSet::new();
    // constants the analysis left without a value, though the file determines them
    let mut unfolded: Vec<String> = Vec::new();

    for (index, pn) in graph.node.iter().enumerate() {
        let name = if !pn.name.is_empty() {
            pn.name.clone()
        } else {
            pn.output.first().cloned().unwrap_or_else(|| format!("{index}-{}", pn.op_type))
        };
        let node_err = |msg: String| Error::Node {
            path: source.into(),
            index,
            node: name.clone(),
            op: pn.op_type.clone(),
            msg,
        };
        let inputs: Vec<Option<String>> = pn
            .input
            .iter()
            .map(|i| if i.is_empty() { None } else { Some(resolve(&alias, i.clone())) })
            .collect();
        // Constant-like ops and ops on statics only are folded away
        let all_static = inputs.iter().flatten().all(|i| statics.contains_key(i));
        if pn.op_type == "Constant" || (all_static && pn.op_type != "RandomNormalLike") {
            // parameters flow through indexing and reshaping (a bias table gathered into place);
            // arithmetic on constants (attention masks built at export time) makes a computed
            // constant, not a trainable parameter
            let sources: Vec<String> = if map::keeps_param_identity(&pn.op_type) {
                inputs
                    .iter()
                    .enumerate()
                    .filter(|(slot, _)| *slot == 0 || pn.op_type == "Concat")
                    .filter_map(|(_, i)| i.as_ref().and_then(|i| statics.get(i)))
                    .filter(|s| s.float)
                    .flat_map(|s| s.sources.clone())
                    .collect()
            } else {
                Vec::new()
            };
            let computable =
                inputs.iter().flatten().all(|i| statics.get(i).is_some_and(|s| s.computable));
            for o in pn.output.iter().filter(|o| !o.is_empty()) {
                let f = fact_of(o);
                let float = f.and_then(|f| f.datum_type).map(|d| d.is_float()).unwrap_or(false);
                let numel = shape_of(o).map(|s| s.iter().map(|&d| d as u64).product()).unwrap_or(0);
                let mut srcs = sources.clone();
                srcs.sort();
                srcs.dedup();
                statics.insert(
                    o.clone(),
                    Static {
                        float,
                        numel,
                        sources: srcs,
                        value: f.and_then(|f| f.value.clone()),
                        computable,
                    },
                );
            }
            continue;
        }
        if pn.op_type == "Shape" || pn.op_type == "Size" {
            // the shape of an activation is known once input shapes are bound
            for o in pn.output.iter().filter(|o| !o.is_empty()) {
                let value = fact_of(o).and_then(|f| f.value.clone());
                if value.is_none() {
                    return Err(node_err(format!(
                        "the shape this node reads is not known{}",
                        facts.why()
                    )));
                }
                statics.insert(
                    o.clone(),
                    Static { float: false, numel: 0, sources: vec![], value, computable: true },
                );
            }
            continue;
        }
        if map::is_pass_through(&pn.op_type) {
            if let (Some(Some(i)), Some(o)) = (inputs.first(), pn.output.first()) {
                alias.insert(o.clone(), i.clone());
                continue;
            }
        }
        if opts.strict && !map::is_known(&pn.op_type) {
            return Err(Error::Unsupported {
                path: source.into(),
                index,
                node: name,
                op: pn.op_type.clone(),
            });
        }
        // activation inputs and static operands
        let mut act_inputs: Vec<(usize, String)> = Vec::new();
        let mut static_inputs: Vec<(usize, &Static)> = Vec::new();
        for (slot, i) in inputs.iter().enumerate() {
            let Some(i) = i else { continue };
            if let Some(s) = statics.get(i) {
                static_inputs.push((slot, s));
            } else if producer.contains_key(i) {
                act_inputs.push((slot, i.clone()));
            } else {
                return Err(node_err(format!("input '{i}' is not produced by any earlier node")));
            }
        }
        let in_shapes: Vec<Shape> = act_inputs
            .iter()
            .map(|(_, i)| {
                shape_of(i).ok_or_else(|| node_err(format!("shape of input '{i}' is unknown")))
            })
            .collect::<Result<_>>()?;
        let outputs: Vec<&String> = pn.output.iter().filter(|o| !o.is_empty()).collect();
        let mut out_shapes = Vec::with_capacity(outputs.len());
        for o in &outputs {
            match shape_of(o) {
                Some(s) => out_shapes.push(s),
                None => {
                    let why = if !map::is_known(&pn.op_type) {
                        format!("op {} is not supported by the shape analysis, so its output shape is unknown", pn.op_type)
                    } else {
                        format!("could not infer the shape of output '{o}'{}", facts.why())
                    };
                    return Err(node_err(why));
                }
            }
        }
        let ctx = map::NodeCtx {
            pn,
            in_shapes: &in_shapes,
            out_shapes: &out_shapes,
            statics: &static_inputs,
            act_slots: act_inputs.iter().map(|(s, _)| *s).collect(),
        };
        let mapped = map::map_node(&ctx).map_err(node_err)?;
        if mapped.kind.is_unknown() {
            tracing::warn!("{source}: node {index} '{name}': op {} is not in nape's vocabulary; kept as Unknown", pn.op_type);
        }
        // parameters: static float operands at parameter slots, each source counted once
        let mut params = 0u64;
        for (slot, s) in &static_inputs {
            if !s.float || s.numel <= 1 || !map::is_param_slot(&pn.op_type, *slot) {
                continue;
            }
            for src in &s.sources {
                let Some(origin) = statics.get(src).filter(|o| o.float && o.numel > 1) else {
                    continue;
                };
                if claimed.insert(src.clone()) {
                    params += origin.numel;
                }
            }
        }
        for (slot, s) in &static_inputs {
            if s.value.is_none() && s.computable {
                let name = inputs[*slot].clone().unwrap_or_default();
                if !unfolded.contains(&name) {
                    unfolded.push(name);
                }
            }
        }
        let operands = static_inputs
            .iter()
            .map(|(slot, s)| {
                let name = inputs[*slot].clone().unwrap_or_default();
                let shape = weight_inputs
                    .get(name.as_str())
                    .cloned()
                    .or_else(|| shape_of(&name))
                    .unwrap_or_default();
                Operand {
                    slot: *slot,
                    param: s.float
                        && s.numel > 1
                        && !s.sources.is_empty()
                        && map::is_param_slot(&pn.op_type, *slot),
                    value: s.value.as_deref().and_then(const_value),
                    name,
                    shape,
                }
            })
            .collect();
        let mut node = OpNode::new(mapped.kind, name);
        node.act_slots = act_inputs.iter().map(|(s, _)| *s).collect();
        node.operands = operands;
        node.onnx_attrs = pn.attribute.iter().filter_map(attr_value).collect();
        node.onnx_op = pn.op_type.clone();
        node.attrs = mapped.attrs;
        node.in_shapes = in_shapes.clone();
        node.out_shapes = out_shapes.clone();
        node.params = params;
        node.macs = mapped.macs;
        node.flops = mapped.flops;
        let n = cg.graph.add_node(node);
        for (dst_slot, (_, i)) in act_inputs.iter().enumerate() {
            let (src, src_slot) = producer[i];
            let shape = in_shapes[dst_slot].clone();
            cg.graph.add_edge(src, n, TensorEdge { src_slot, dst_slot, shape, name: i.clone() });
        }
        for (slot, o) in outputs.iter().enumerate() {
            producer.insert((*o).clone(), (n, slot));
        }
    }
    // outputs
    for vo in &graph.output {
        let t = resolve(&alias, vo.name.clone());
        let Some(&(src, src_slot)) = producer.get(&t) else {
            if statics.contains_key(&t) {
                tracing::warn!(
                    "{source}: output '{}' is a constant; it has no node in the graph",
                    vo.name
                );
                continue;
            }
            return Err(invalid(format!("output '{}' is not produced by any node", vo.name)));
        };
        let shape = cg.graph[src].out_shapes.get(src_slot).cloned().unwrap_or_default();
        let mut node = OpNode::new(OpKind::Output, vo.name.clone());
        node.in_shapes = vec![shape.clone()];
        let n = cg.graph.add_node(node);
        cg.graph.add_edge(src, n, TensorEdge { src_slot, dst_slot: 0, shape, name: t });
    }
    if !unfolded.is_empty() {
        fill_folded(&mut cg, model, &unfolded, &bind, source);
    }
    prune_dead(&mut cg);
    cg.fuse_activations();
    cg.sort().map_err(|e| invalid(e.to_string()))?;
    cg.validate().map_err(|e| Error::Shape { path: source.into(), msg: e.to_string() })?;
    Ok(cg)
}

thread_local! {
    static IN_TRACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs tract on user input. tract can panic on malformed models (an `unwrap` deep in an op's
/// rules); such a panic becomes an `InvalidOnnx` error for this file instead of a crash. The
/// panic hook stays silent inside this region only, so nape's own bugs still report loudly.
fn guarded<T>(source: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_TRACT.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
    IN_TRACT.with(|c| c.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_TRACT.with(|c| c.set(false));
    match r {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown cause".into());
            let first = msg.lines().next().unwrap_or("").trim();
            Err(Error::InvalidOnnx {
                path: source.into(),
                msg: format!("the model is malformed (tract failed: {first})"),
            })
        }
    }
}

/// Rejects values no real model has but that send tract's shape rules into endless loops or
/// huge allocations (found by fuzzing: an axis of 2^37 in a LayerNorm spins for minutes).
fn sanity_check(graph: &pb::GraphProto, source: &str) -> Result<()> {
    const MAX_AXIS: i64 = 64;
    const MAX_DIM: i64 = 1 << 30;
    const MAX_ELEMS: u64 = 1 << 34;
    for (index, pn) in graph.node.iter().enumerate() {
        for a in &pn.attribute {
            let bad_axis = matches!(a.name.as_str(), "axis" | "axes" | "perm")
                && (a.i.abs() > MAX_AXIS || a.ints.iter().any(|v| v.abs() > MAX_AXIS));
            let bad_shape =
                matches!(a.name.as_str(), "kernel_shape" | "strides" | "dilations" | "pads")
                    && a.ints.iter().any(|&v| !(0..=MAX_DIM).contains(&v));
            if bad_axis || bad_shape {
                let node = if pn.name.is_empty() {
                    pn.output.first().cloned().unwrap_or_default()
                } else {
                    pn.name.clone()
                };
                return Err(Error::Node {
                    path: source.into(),
                    index,
                    node,
                    op: pn.op_type.clone(),
                    msg: format!("attribute '{}' has an impossible value", a.name),
                });
            }
        }
    }
    for vi in graph.input.iter().chain(graph.output.iter()) {
        if declared_dims(vi).iter().flatten().any(|&d| d > MAX_DIM) {
            return Err(Error::InvalidOnnx {
                path: source.into(),
                msg: format!("tensor '{}' declares a dimension over {MAX_DIM}", vi.name),
            });
        }
    }
    for t in &graph.initializer {
        let elems =
            t.dims
                .iter()
                .try_fold(1u64, |acc, &d| if d < 0 { None } else { acc.checked_mul(d as u64) });
        if elems.is_none_or(|e| e > MAX_ELEMS) {
            return Err(Error::InvalidOnnx {
                path: source.into(),
                msg: format!("initializer '{}' has impossible dims {:?}", t.name, t.dims),
            });
        }
    }
    Ok(())
}

/// A constant's values as the executor keeps them (floats as f32, integers and booleans as i64).
fn const_value(t: &Tensor) -> Option<ConstValue> {
    if t.datum_type().is_float() {
        let c = t.cast_to::<f32>().ok()?;
        Some(ConstValue::Float(Arc::new(
            c.to_plain_array_view::<f32>().ok()?.iter().copied().collect(),
        )))
    } else {
        let c = t.cast_to::<i64>().ok()?;
        Some(ConstValue::Int(Arc::new(
            c.to_plain_array_view::<i64>().ok()?.iter().copied().collect(),
        )))
    }
}

/// An ONNX attribute as a name and value (graphs and tensors as attributes are left out).
fn attr_value(a: &pb::AttributeProto) -> Option<(String, AttrValue)> {
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

/// The first line of a message (tract's errors can carry a backtrace).
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// What tract's analysis knows of one tensor.
#[derive(Debug, Clone, Default)]
struct Fact {
    shape: Option<Shape>,
    datum_type: Option<DatumType>,
    value: Option<Arc<Tensor>>,
}

/// Facts of every named tensor after one analysis.
struct Facts {
    table: HashMap<String, Fact>,
    /// Node outputs whose shape stayed unknown.
    unknown: usize,
    /// The analysis error, if it stopped on one.
    error: Option<String>,
}

impl Facts {
    fn why(&self) -> String {
        match &self.error {
            Some(e) => format!(": {e}"),
            None => " (check the input shapes)".into(),
        }
    }
}

/// The fact a graph input is bound to.
fn bind_input(
    name: &str,
    graph: &pb::GraphProto,
    data_inputs: &[&pb::ValueInfoProto],
    weight_inputs: &HashMap<&str, Vec<usize>>,
    opts: &ImportOptions,
    source: &str,
) -> Result<InferenceFact> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let shape: Vec<usize> = if let Some(dims) = weight_inputs.get(name) {
        dims.clone()
    } else if let Some(vi) = graph.input.iter().find(|v| v.name == name) {
        let first = data_inputs.first().map(|v| v.name == name).unwrap_or(false);
        let declared = declared_dims(vi);
        match (&opts.input_shape, first) {
            (Some(s), true) => {
                if !declared.is_empty() && declared.len() != s.len() {
                    return Err(Error::Shape {
                        path: source.into(),
                        msg: format!(
                            "input '{name}' has rank {} but --input-shape gives rank {} ({s:?})",
                            declared.len(),
                            s.len()
                        ),
                    });
                }
                if declared.iter().zip(s).any(|(d, w)| d.is_some_and(|d| d as usize != *w)) {
                    return Err(Error::Shape {
                        path: source.into(),
                        msg: format!(
                            "input '{name}' is declared {declared:?} but --input-shape gives {s:?}"
                        ),
                    });
                }
                s.clone()
            }
            _ => {
                if declared.is_empty() {
                    return Err(Error::Shape {
                        path: source.into(),
                        msg: format!("input '{name}' has no declared shape: pass --input-shape"),
                    });
                }
                declared.iter().map(|d| d.map(|v| v as usize).unwrap_or(1)).collect()
            }
        }
    } else {
        return Err(invalid(format!("input '{name}' is used but not declared")));
    };
    let dt = graph
        .input
        .iter()
        .find(|v| v.name == name)
        .and_then(elem_type)
        .and_then(datum_type_of)
        .unwrap_or(DatumType::F32);
    Ok(InferenceFact::dt_shape(dt, shape.iter().map(|&d| d.to_dim()).collect::<TVec<_>>()))
}

/// Parses the model with tract, binds its inputs and runs the shape analysis.
fn analyse(
    model: &pb::ModelProto,
    ignore_value_info: bool,
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) -> Result<Facts> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(ignore_value_info);
    let parsed = onnx.parse(model, None).map_err(|e| invalid(one_line(&format!("{e:#}"))))?;
    let mut tm = parsed.model;
    let input_outlets: Vec<OutletId> =
        tm.input_outlets().map_err(|e| invalid(format!("{e:#}")))?.to_vec();
    for (ix, outlet) in input_outlets.iter().enumerate() {
        let name = tm.node(outlet.node).name.clone();
        let fact = bind(&name)?;
        tm.set_input_fact(ix, fact).map_err(|e| invalid(format!("{e:#}")))?;
    }
    let error = tm.analyse(true).err().map(|e| one_line(&format!("{e:#}")));
    let mut table = HashMap::with_capacity(parsed.outlets_by_name.len());
    let mut unknown = 0;
    let node_outputs: HashSet<&str> = model
        .graph
        .iter()
        .flat_map(|g| g.node.iter())
        .flat_map(|n| n.output.iter().map(|s| s.as_str()))
        .collect();
    for (name, outlet) in &parsed.outlets_by_name {
        let Ok(f) = tm.outlet_fact(*outlet) else { continue };
        let shape: Option<Shape> = f.shape.concretize().and_then(|dims| {
            dims.iter().map(|d| d.to_i64().ok().filter(|&v| v >= 0).map(|v| v as usize)).collect()
        });
        if shape.is_none() && node_outputs.contains(name.as_str()) {
            unknown += 1;
        }
        table.insert(
            name.clone(),
            Fact { shape, datum_type: f.datum_type.concretize(), value: f.concretize() },
        );
    }
    Ok(Facts { table, unknown, error })
}

/// Gives the operands named in `names` the values tract computes for them. tract's analysis
/// does not propagate values through every op (Swin's shifted-window attention masks are built
/// at export time by ScatterND chains on initializers), but it can run them: the graph is run
/// with those tensors as its outputs, on zero inputs, which they do not depend on. Where that
/// fails the operands stay without a value, and the executor says so when it needs one.
fn fill_folded(
    cg: &mut Cg,
    model: &pb::ModelProto,
    names: &[String],
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) {
    // the file's value_info can contradict tract's rules (as in `analyse`): try without, then with
    let values = match guarded(source, || fold_constants(model, names, true, bind, source))
        .or_else(|_| guarded(source, || fold_constants(model, names, false, bind, source)))
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("{source}: constants {names:?} could not be computed: {e}");
            return;
        }
    };
    for n in cg.graph.node_weights_mut() {
        for op in n.operands.iter_mut().filter(|o| o.value.is_none()) {
            if let Some(v) = values.get(&op.name) {
                op.value = const_value(v);
            }
        }
    }
}

/// Runs tract on `model` with `names` as its outputs and zeros as its inputs.
fn fold_constants(
    model: &pb::ModelProto,
    names: &[String],
    ignore_value_info: bool,
    bind: &dyn Fn(&str) -> Result<InferenceFact>,
    source: &str,
) -> Result<HashMap<String, Arc<Tensor>>> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let tract_err = |e: TractError| invalid(one_line(&format!("{e:#}")));
    let mut proto = model.clone();
    let graph = proto.graph.as_mut().ok_or_else(|| invalid("no graph".into()))?;
    graph.output = names
        .iter()
        .map(|n| pb::ValueInfoProto { name: n.clone(), ..Default::default() })
        .collect();
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(ignore_value_info);
    let mut tm = onnx.model_for_proto_model(&proto).map_err(tract_err)?;
    let outlets = tm.input_outlets().map_err(tract_err)?.to_vec();
    let mut inputs = TVec::new();
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = tm.node(outlet.node).name.clone();
        let fact = bind(&name)?;
        let dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
        let shape: Vec<usize> = fact
            .shape
            .concretize()
            .and_then(|d| {
                d.iter().map(|d| d.to_i64().ok().and_then(|v| usize::try_from(v).ok())).collect()
            })
            .ok_or_else(|| invalid(format!("input '{name}' has no concrete shape")))?;
        tm.set_input_fact(ix, fact).map_err(tract_err)?;
        inputs.push(Tensor::zero_dt(dt, &shape).map_err(tract_err)?.into_tvalue());
    }
    let outs = tm
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .and_then(|r| r.run(inputs))
        .map_err(tract_err)?;
    Ok(names.iter().cloned().zip(outs.into_iter().map(|t| t.into_arc_tensor())).collect())
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

/// Whether at least one graph input would remain a data input if the weight-slot heuristic
/// is applied (so a plain single-input model is never left without data).
fn data_inputs_exist(
    graph: &pb::GraphProto,
    inits: &HashMap<&str, &pb::TensorProto>,
    declared: &HashSet<&str>,
    weight_slots: &HashSet<&str>,
) -> bool {
    graph.input.iter().any(|v| {
        let n = v.name.as_str();
        !inits.contains_key(n) && !declared.contains(n) && !weight_slots.contains(n)
    })
}

/// Graph inputs consumed only at weight slots (Conv/Gemm weights, norm scales): weights of a
/// file exported without its data, when the file does not list them under WEIGHT_INPUTS_KEY.
fn weight_like_inputs<'a>(
    graph: &'a pb::GraphProto,
    inits: &HashMap<&str, &pb::TensorProto>,
) -> HashSet<&'a str> {
    let mut uses: BTreeMap<&str, (bool, bool)> = BTreeMap::new(); // (used as weight, used otherwise)
    for pn in &graph.node {
        for (slot, i) in pn.input.iter().enumerate() {
            let e = uses.entry(i.as_str()).or_default();
            if slot > 0 && map::is_weight_slot(&pn.op_type, slot) {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    graph
        .input
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| !inits.contains_key(n))
        .filter(|n| matches!(uses.get(n), Some((true, false))))
        .collect()
}

fn elem_type(vi: &pb::ValueInfoProto) -> Option<i32> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t.elem_type),
    }
}

fn datum_type_of(t: i32) -> Option<DatumType> {
    Some(match t {
        1 => DatumType::F32,
        2 => DatumType::U8,
        3 => DatumType::I8,
        6 => DatumType::I32,
        7 => DatumType::I64,
        9 => DatumType::Bool,
        10 => DatumType::F16,
        11 => DatumType::F64,
        _ => return None,
    })
}

/// Declared dims of a value: `Some(v)` for a fixed dimension, `None` for a symbolic one.
fn declared_dims(vi: &pb::ValueInfoProto) -> Vec<Option<i64>> {
    use pb::tensor_shape_proto::dimension::Value;
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(v)) if v > 0 => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
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
