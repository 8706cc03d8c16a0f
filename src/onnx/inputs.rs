//! The first stage of reading a model: sanity limits on what the file declares, and which
//! graph inputs are data and which are weights (declared under `nape.weight_inputs`, or
//! recognised by their use).

use super::bind::Dim;
use super::slots;
use super::{HashMap, HashSet};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Rejects values no real model has but that send tract's shape rules into endless loops or
/// huge allocations (found by fuzzing: an axis of 2^37 in a LayerNorm spins for minutes).
pub(super) fn sanity_check(graph: &pb::GraphProto, source: &str) -> Result<()> {
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

/// Whether at least one graph input would remain a data input if the weight-slot heuristic
/// is applied (so a plain single-input model is never left without data).
pub(super) fn data_inputs_exist(
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
pub(super) fn weight_like_inputs<'a>(
    graph: &'a pb::GraphProto,
    inits: &HashMap<&str, &pb::TensorProto>,
) -> HashSet<&'a str> {
    let mut uses: BTreeMap<&str, (bool, bool)> = BTreeMap::new(); // (used as weight, used otherwise)
    for pn in &graph.node {
        for (slot, i) in pn.input.iter().enumerate() {
            let e = uses.entry(i.as_str()).or_default();
            if slot > 0 && slots::is_weight_slot(&pn.op_type, slot) {
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

pub(super) fn elem_type(vi: &pb::ValueInfoProto) -> Option<i32> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t.elem_type),
    }
}

pub(super) fn datum_type_of(t: i32) -> Option<DatumType> {
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
pub(super) fn declared_dims(vi: &pb::ValueInfoProto) -> Vec<Option<i64>> {
    let dims = super::bind::declared(vi).unwrap_or_default();
    dims.iter().map(|d| if let Dim::Fixed(v) = d { Some(*v as i64) } else { None }).collect()
}

/// Graph inputs sorted into data and weights.
pub(super) struct Inputs<'a> {
    /// Data inputs, in file order.
    pub data: Vec<&'a pb::ValueInfoProto>,
    /// Weight inputs and their dims.
    pub weights: HashMap<&'a str, Vec<usize>>,
    /// Weight inputs recognised by use only (the file does not declare them): nape cannot be
    /// sure of these, and says so.
    pub inferred: Vec<String>,
}

/// Which graph inputs are weights: those the file lists under `nape.weight_inputs`; else
/// those used only where weights go (see [`weight_like_inputs`] and [`weights_by_use`]),
/// provided at least one data input remains.
pub(super) fn classify<'a>(
    model: &'a pb::ModelProto,
    graph: &'a pb::GraphProto,
    source: &str,
) -> Result<Inputs<'a>> {
    let invalid = |msg: String| Error::InvalidOnnx { path: source.into(), msg };
    let inits: HashMap<&str, &pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let declared: HashSet<&str> = model
        .metadata_props
        .iter()
        .filter(|p| p.key == super::WEIGHT_INPUTS_KEY)
        .flat_map(|p| p.value.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .collect();
    let mut by_use = weight_like_inputs(graph, &inits);
    if declared.is_empty() {
        by_use.extend(weights_by_use(graph, &inits));
    }
    let use_heuristic = data_inputs_exist(graph, &inits, &declared, &by_use);
    let mut out = Inputs { data: Vec::new(), weights: HashMap::default(), inferred: Vec::new() };
    for vi in graph.input.iter().filter(|v| !inits.contains_key(v.name.as_str())) {
        let name = vi.name.as_str();
        let heuristic = use_heuristic && by_use.contains(name);
        if !declared.contains(name) && !heuristic {
            out.data.push(vi);
            continue;
        }
        let dims: Option<Vec<usize>> =
            declared_dims(vi).iter().map(|d| d.map(|v| v as usize)).collect();
        let dims =
            dims.ok_or_else(|| invalid(format!("weight input '{name}' has a symbolic shape")))?;
        if !declared.contains(name) && !is_weight_slot_only(graph, name) {
            out.inferred.push(name.to_string());
        }
        out.weights.insert(name, dims);
    }
    if out.data.is_empty() {
        return Err(invalid("the graph has no data input".into()));
    }
    Ok(out)
}

/// Whether every use of `name` is at a weight slot by the op's definition (a Conv kernel): a
/// weight beyond doubt.
fn is_weight_slot_only(graph: &pb::GraphProto, name: &str) -> bool {
    graph.node.iter().all(|pn| {
        pn.input
            .iter()
            .enumerate()
            .all(|(slot, i)| i != name || (slot > 0 && slots::is_weight_slot(&pn.op_type, slot)))
    })
}

/// Float graph inputs after the first one, with fixed dims, whose every use is where a weight
/// goes: a weight slot, any operand but the first of a compute op (`MatMul(x, W)`,
/// `Add(x, b)`), or the data operand of a layout op (Identity, Transpose, Reshape, Cast, ...)
/// whose result is used that way in turn. This is how PyTorch writes a model exported with
/// `export_params=False`, and how transformer weights look when moved out of a file. A second
/// float data input joined to the first by `Add(x, y)` looks the same: callers say so.
fn weights_by_use<'a>(
    graph: &'a pb::GraphProto,
    inits: &HashMap<&str, &pb::TensorProto>,
) -> HashSet<&'a str> {
    let mut consumers: HashMap<&str, Vec<(&pb::NodeProto, usize)>> = HashMap::default();
    for pn in &graph.node {
        for (slot, i) in pn.input.iter().enumerate() {
            consumers.entry(i.as_str()).or_default().push((pn, slot));
        }
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let weightish = |name: &str| used_as_weight(name, &consumers, &graph_outputs, 0);
    graph
        .input
        .iter()
        .filter(|v| !inits.contains_key(v.name.as_str()))
        .skip(1)
        .filter(|v| elem_type(v).is_some_and(super::is_float_type))
        .filter(|v| {
            let d = declared_dims(v);
            !d.is_empty() && d.iter().all(Option::is_some)
        })
        .map(|v| v.name.as_str())
        .filter(|n| weightish(n))
        .collect()
}

fn used_as_weight(
    name: &str,
    consumers: &HashMap<&str, Vec<(&pb::NodeProto, usize)>>,
    graph_outputs: &HashSet<&str>,
    depth: usize,
) -> bool {
    let Some(uses) = consumers.get(name) else { return false };
    if graph_outputs.contains(name) || depth > 8 {
        return false;
    }
    uses.iter().all(|(pn, slot)| {
        let op = pn.op_type.as_str();
        if op == "Gather" && *slot == 0 {
            return true; // an embedding table or a bias table indexed into place
        }
        if slots::keeps_param_identity(op) && (*slot == 0 || op == "Concat") {
            return pn
                .output
                .iter()
                .all(|o| used_as_weight(o, consumers, graph_outputs, depth + 1));
        }
        *slot > 0 && (slots::is_weight_slot(op, *slot) || slots::is_param_slot(op, *slot))
    })
}
