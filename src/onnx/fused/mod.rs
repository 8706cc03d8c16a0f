//! Fused ops read as the ops that define them, before tract reads the model, so the counts,
//! the graph, its features and the network the proxies run are those of the unfused network
//! that PyTorch's exporters write at lower opsets:
//! - ONNX's own function ops of opset 23, which `torch.onnx.export(..., opset_version=23)`
//!   writes: `RMSNormalization` and `Attention` (scaled dot-product attention; its 4-D form, and
//!   its 3-D form when the query and key/value heads agree);
//! - ONNX Runtime's fusions (`onnxruntime.transformers.optimizer`, Optimum, Olive):
//!   `SimplifiedLayerNormalization` (RMS norm), `SkipLayerNormalization`,
//!   `SkipSimplifiedLayerNormalization`, `BiasGelu`, `FastGelu`, `QuickGelu`,
//!   `MultiHeadAttention` and `Attention` (with packed QKV weights).
//!
//! A form not listed (a KV cache, a soft cap, rotary embeddings inside an attention, a mask
//! given as lengths, the mean and inverse-deviation outputs of a skip norm) is kept, and read
//! as an unknown op.

mod attention;
mod ms_attention;
#[cfg(test)]
mod tests;

use super::lower::opset;
use super::rewrite::{attr_ints, attr_s, float_attr, Out};
use super::write::{float as attr_f, int as attr_i};
use super::HashMap;
use std::collections::BTreeMap;
use tract_onnx::pb;

/// The RMS norm the fused ops of this module are made of.
impl Out {
    /// `x * scale / sqrt(mean(x^2) + eps)` over `axes`, as PyTorch writes `RMSNorm` (`Pow`,
    /// `ReduceMean`, `Add`, `Sqrt`, `Reciprocal`, `Mul`, `Mul`).
    fn rms_norm(&mut self, x: String, scale: String, axes: &[i64], eps: f32, out: &str) {
        let two = self.floats(&[], &[2.0]);
        let sq = self.op("Pow", vec![x.clone(), two], vec![]);
        let mean = self.reduce("ReduceMean", sq, axes);
        let e = self.floats(&[], &[eps]);
        let var = self.op("Add", vec![mean, e], vec![]);
        let rms = self.op("Sqrt", vec![var], vec![]);
        let inv = self.op("Reciprocal", vec![rms], vec![]);
        let normed = self.op("Mul", vec![x, inv], vec![]);
        self.op_to("Mul", vec![normed, scale], vec![], out);
    }
}

/// What the rest of the graph says about a name: its dims and element type, where declared.
#[derive(Default)]
struct Declared {
    elem: HashMap<String, i32>,
    /// The dims, `None` for a symbolic one.
    dims: HashMap<String, Vec<Option<i64>>>,
}

impl Declared {
    fn of(graph: &pb::GraphProto) -> Declared {
        let mut d = Declared::default();
        for vi in graph.input.iter().chain(&graph.value_info).chain(&graph.output) {
            if let Some(pb::type_proto::Value::TensorType(t)) =
                vi.r#type.as_ref().and_then(|t| t.value.as_ref())
            {
                d.elem.insert(vi.name.clone(), t.elem_type);
                if t.shape.is_some() {
                    d.dims.insert(vi.name.clone(), super::inputs::declared_dims(vi));
                }
            }
        }
        for t in &graph.initializer {
            d.elem.insert(t.name.clone(), t.data_type);
            d.dims.insert(t.name.clone(), t.dims.iter().map(|&v| Some(v)).collect());
        }
        d
    }

    /// The rank of `name`, where the file declares its shape.
    fn rank(&self, name: &str) -> Option<usize> {
        self.dims.get(name).map(Vec::len)
    }

    /// Dim `i` of `name`, where the file fixes it.
    fn dim(&self, name: &str, i: usize) -> Option<i64> {
        self.dims.get(name)?.get(i).copied().flatten()
    }
}

fn input(n: &pb::NodeProto, i: usize) -> Option<String> {
    n.input.get(i).filter(|s| !s.is_empty()).cloned()
}

fn has_output(n: &pb::NodeProto, i: usize) -> bool {
    n.output.get(i).is_some_and(|s| !s.is_empty())
}

fn int_attr(n: &pb::NodeProto, name: &str) -> Option<i64> {
    super::map::attr_int(n, name)
}

/// The fused ops this module expands, by domain and op type.
fn is_fused(n: &pb::NodeProto) -> bool {
    let onnx = n.domain.is_empty() || n.domain == "ai.onnx";
    match n.op_type.as_str() {
        "RMSNormalization" => onnx,
        "Attention" => onnx || n.domain == "com.microsoft",
        "SimplifiedLayerNormalization" => true, // ONNX Runtime registers it in both domains
        "SkipLayerNormalization"
        | "SkipSimplifiedLayerNormalization"
        | "BiasGelu"
        | "FastGelu"
        | "QuickGelu"
        | "MultiHeadAttention" => n.domain == "com.microsoft",
        _ => false,
    }
}

/// Expands every fused op of the model it can, in place, with a note saying how many.
pub(super) fn expand(model: &mut pb::ModelProto) {
    let opset = opset(model);
    let Some(graph) = model.graph.as_mut() else { return };
    if !graph.node.iter().any(is_fused) {
        return;
    }
    let declared = Declared::of(graph);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut nodes = Vec::with_capacity(graph.node.len() + 16);
    let mut inits = Vec::new();
    for (i, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if !is_fused(&n) {
            nodes.push(n);
            continue;
        }
        let base = if n.name.is_empty() { format!("nape_fused_{i}") } else { n.name.clone() };
        let mut out = Out::new(opset, base);
        if expand_one(&n, &mut out, &declared).is_some() {
            *counts.entry(n.op_type.clone()).or_default() += 1;
            nodes.extend(out.nodes);
            inits.extend(out.inits);
        } else {
            nodes.push(n);
        }
    }
    graph.node = nodes;
    graph.initializer.extend(inits);
    if !counts.is_empty() {
        let ops: Vec<String> = counts.iter().map(|(op, c)| format!("{op} x{c}")).collect();
        super::add_read_note(
            model,
            format!(
                "fused ops read as the ops that define them ({}): the counts, graph and prediction are the unfused network's",
                ops.join(", ")
            ),
        );
    }
}

/// Writes `n`'s expansion into `out`; `None` (and nothing written that is used) when its form
/// is not one this module reads.
fn expand_one(n: &pb::NodeProto, out: &mut Out, declared: &Declared) -> Option<()> {
    let y = n.output.first().filter(|s| !s.is_empty())?.clone();
    match n.op_type.as_str() {
        "RMSNormalization" | "SimplifiedLayerNormalization" => {
            if has_output(n, 1) {
                return None; // the inverse deviation, read by a training graph
            }
            let (x, scale) = (input(n, 0)?, input(n, 1)?);
            let axes = norm_axes(int_attr(n, "axis").unwrap_or(-1), declared.rank(&x))?;
            out.rms_norm(x, scale, &axes, float_attr(n, "epsilon", 1e-5), &y);
        }
        "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => skip_norm(n, out, &y)?,
        "BiasGelu" | "FastGelu" => {
            let x = input(n, 0)?;
            let x = match input(n, 1) {
                Some(b) => out.op("Add", vec![x, b], vec![]),
                None => x,
            };
            let approximate = if n.op_type == "FastGelu" { "tanh" } else { "none" };
            out.op_to("Gelu", vec![x], vec![attr_s("approximate", approximate)], &y);
        }
        "QuickGelu" => {
            let x = input(n, 0)?;
            let alpha = out.floats(&[], &[float_attr(n, "alpha", 1.702)]);
            let ax = out.op("Mul", vec![x.clone(), alpha], vec![]);
            let gate = out.op("Sigmoid", vec![ax], vec![]);
            out.op_to("Mul", vec![x, gate], vec![], &y);
        }
        "MultiHeadAttention" => ms_attention::multi_head(n, out, declared, &y)?,
        "Attention" if n.domain == "com.microsoft" => ms_attention::packed(n, out, declared, &y)?,
        _ => attention::attention(n, out, declared, &y)?,
    }
    Some(())
}

/// The axes a normalisation over `axis` and the dims after it reduces: negative ones as they
/// are; from a non-negative `axis`, only when the input's rank is declared.
fn norm_axes(axis: i64, rank: Option<usize>) -> Option<Vec<i64>> {
    if axis < 0 {
        return Some((axis..0).collect());
    }
    let rank = rank? as i64;
    (axis < rank).then(|| (axis..rank).collect())
}

/// `SkipLayerNormalization(x, skip, gamma, beta, bias)` is `LayerNormalization(x + bias + skip)`
/// over the last axis (the bias is the `Add` of the `MatMul` before it, which the fusion moved
/// in); `SkipSimplifiedLayerNormalization(x, skip, gamma, bias)` the RMS norm of the same sum.
/// The sum's output (the residual stream, output 3) is written when it is read; a norm whose
/// mean or inverse deviation is read is kept.
fn skip_norm(n: &pb::NodeProto, out: &mut Out, y: &str) -> Option<()> {
    if has_output(n, 1) || has_output(n, 2) {
        return None;
    }
    let simplified = n.op_type == "SkipSimplifiedLayerNormalization";
    let (x, skip, gamma) = (input(n, 0)?, input(n, 1)?, input(n, 2)?);
    let (beta, bias) = if simplified { (None, input(n, 3)) } else { (input(n, 3), input(n, 4)) };
    let x = match bias {
        Some(b) => out.op("Add", vec![x, b], vec![]),
        None => x,
    };
    let sum = match n.output.get(3).filter(|s| !s.is_empty()) {
        Some(s) => {
            out.op_to("Add", vec![x, skip], vec![], s);
            s.clone()
        }
        None => out.op("Add", vec![x, skip], vec![]),
    };
    let eps = float_attr(n, "epsilon", 1e-5);
    if simplified {
        out.rms_norm(sum, gamma, &[-1], eps, y);
    } else {
        let attrs = vec![attr_i("axis", -1), attr_f("epsilon", eps)];
        out.op_to(
            "LayerNormalization",
            [vec![sum, gamma], beta.into_iter().collect()].concat(),
            attrs,
            y,
        );
    }
    Some(())
}
