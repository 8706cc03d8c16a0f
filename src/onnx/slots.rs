//! Which inputs of an ONNX op hold weights, parameters or values: the rules weight provenance
//! (`nodes`) and the classification of graph inputs (`inputs`) read.

/// Ops that pass their input through unchanged at inference.
pub(super) fn is_pass_through(op: &str) -> bool {
    matches!(op, "Identity" | "Dropout")
}

/// Ops through which a constant keeps being the parameter it was made from (indexing, layout).
pub(super) fn keeps_param_identity(op: &str) -> bool {
    matches!(
        op,
        "Gather"
            | "Reshape"
            | "Transpose"
            | "Unsqueeze"
            | "Squeeze"
            | "Slice"
            | "Expand"
            | "Concat"
            | "Cast"
            | "Identity"
            | "Flatten"
            | "Tile"
            | "Split"
    )
}

/// Input slots whose values an op computed from constants and weights passes on to its result
/// (weight provenance): not shapes, axes, indices, bounds or BatchNorm running statistics.
pub(super) fn carries_value(op: &str, slot: usize) -> bool {
    match op {
        "BatchNormalization" => slot <= 2,
        "Where" => slot != 0,
        "Concat" | "Sum" | "Mean" | "Max" | "Min" | "Add" | "Sub" | "Mul" | "Div" | "MatMul"
        | "Gemm" | "Einsum" => true,
        _ if op.starts_with("Reduce") => slot == 0,
        _ => slot == 0 || !is_index_like(op),
    }
}

/// Ops whose inputs after the first are shapes, indices, bounds or scales, never values.
fn is_index_like(op: &str) -> bool {
    matches!(
        op,
        "Resize"
            | "Upsample"
            | "Clip"
            | "Pad"
            | "Reshape"
            | "Expand"
            | "Tile"
            | "Slice"
            | "Split"
            | "Squeeze"
            | "Unsqueeze"
            | "Range"
            | "ConstantOfShape"
            | "TopK"
            | "OneHot"
            | "Pow"
            | "Gather"
            | "GatherElements"
            | "GatherND"
            | "ScatterND"
            | "ScatterElements"
            | "DequantizeLinear"
            | "QuantizeLinear"
            | "Cast"
            | "CastLike"
            | "Transpose"
            | "Identity"
            | "Flatten"
            | "Trilu"
            | "CumSum"
            | "Col2Im"
    )
}

/// Input slots that hold weights by the op's definition (used to spot weight inputs in files
/// exported without data).
pub(super) fn is_weight_slot(op: &str, slot: usize) -> bool {
    match op {
        "Conv" | "ConvTranspose" | "Gemm" => slot == 1 || slot == 2,
        "BatchNormalization" => (1..=4).contains(&slot),
        "LayerNormalization" | "InstanceNormalization" | "GroupNormalization" | "PRelu" => {
            slot >= 1
        }
        "LSTM" | "GRU" | "RNN" => is_recurrent_param(slot),
        _ => false,
    }
}

/// The recurrent layers' parameter slots: W, R, B and LSTM's peepholes P; not the sequence
/// lengths (4) or the initial states (5, 6).
fn is_recurrent_param(slot: usize) -> bool {
    matches!(slot, 1..=3 | 7)
}

/// Whether a static float operand at `slot` of `op` is a trainable parameter.
pub(super) fn is_param_slot(op: &str, slot: usize) -> bool {
    match op {
        "BatchNormalization" => slot == 1 || slot == 2,
        "Resize" | "Upsample" | "Clip" | "Pad" | "Reshape" | "Expand" | "Tile" | "Slice"
        | "Split" | "Squeeze" | "Unsqueeze" | "ReduceMean" | "ReduceSum" | "ReduceMax"
        | "ReduceMin" | "ReduceProd" | "Range" | "ConstantOfShape" | "TopK" | "OneHot" | "Pow" => {
            slot == 0
        }
        "Where" => slot != 0,
        "LSTM" | "GRU" | "RNN" => is_recurrent_param(slot),
        _ => true,
    }
}

/// The tensors of the enclosing graph that an op's subgraphs (`If`, `Loop`, `Scan` bodies)
/// read, in order of first use: inputs the node does not list, but reads all the same.
pub(super) fn outer_reads(pn: &tract_onnx::pb::NodeProto) -> Vec<String> {
    let mut reads = Vec::new();
    for g in pn.attribute.iter().flat_map(|a| a.g.iter().chain(&a.graphs)) {
        let mut local: super::HashSet<&str> = g
            .input
            .iter()
            .map(|v| v.name.as_str())
            .chain(g.initializer.iter().map(|t| t.name.as_str()))
            .collect();
        for n in &g.node {
            let inner = outer_reads(n);
            for i in n.input.iter().chain(&inner) {
                if !i.is_empty() && !local.contains(i.as_str()) && !reads.contains(i) {
                    reads.push(i.clone());
                }
            }
            local.extend(n.output.iter().map(String::as_str));
        }
    }
    reads
}
