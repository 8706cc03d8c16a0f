//! Quantized files read as the float network they quantize, before anything else reads them.
//!
//! ONNX Runtime's quantizer, TensorRT's and PyTorch's exporters write an int8 network in three
//! forms, all of which hold the float network's architecture and its weights as integers with
//! a scale and zero point:
//! - **QDQ**: `DequantizeLinear` of each integer weight feeds the ordinary `Conv`, `MatMul` or
//!   `Gemm`; `QuantizeLinear` -> `DequantizeLinear` pairs sit on the activations.
//! - **QOperator**: `QLinearConv`, `QLinearMatMul`, `QGemm`, `QLinearAdd`, ... take the integer
//!   weights and the scales as inputs.
//! - **Dynamic**: `DynamicQuantizeLinear` of each activation, `ConvInteger` / `MatMulInteger`,
//!   then a `Cast` and a `Mul` by the product of the two scales.
//!
//! Each becomes the float network: integer weights are dequantized, `(q - zero_point) * scale`
//! (per tensor or per axis), into float initializers that the quantized op's float counterpart
//! reads; the quantize and dequantize ops of activations become pass-throughs, so the counts,
//! shapes, costs, features and the network the proxies run are the float network's. A weight
//! the rewrite cannot dequantize (a scale that is not a constant, blocked quantization) is left
//! as it is.

mod dynamic;
mod nbits;
#[cfg(test)]
mod tests;
mod values;

use super::{HashMap, HashSet};
use dynamic::{after_integer_product, dynamic_quantize, integer_product};
use tract_onnx::pb;
use values::{dequantized, float_tensor, is_integer, values, Values};

fn is_quantized(op: &str) -> bool {
    matches!(op, "QuantizeLinear" | "DequantizeLinear" | "DynamicQuantizeLinear" | "MatMulNBits")
        || op.starts_with("QLinear")
        || matches!(op, "QGemm" | "ConvInteger" | "MatMulInteger")
}

fn node(op: &str, name: &str, input: Vec<String>, output: Vec<String>) -> pb::NodeProto {
    pb::NodeProto { op_type: op.into(), name: name.into(), input, output, ..Default::default() }
}

fn int_attr(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    super::map::attr_int(n, name).unwrap_or(default)
}

/// The rewrite's state: the constants of the file, the names that now stand for others, the
/// new float weights, and what was rewritten (for the note).
#[derive(Default)]
struct Rewrite {
    consts: HashMap<String, pb::TensorProto>,
    alias: HashMap<String, String>,
    weights: Vec<pb::TensorProto>,
    /// Float weights declared by their shape ([`Rewrite::declare`]).
    declared: Vec<pb::ValueInfoProto>,
    /// Integer weights known by their shape only: graph inputs of int8 or uint8 (the
    /// shapes-only reader leaves quantized weights out as it leaves float ones), with dims.
    int_inputs: HashMap<String, Vec<i64>>,
    /// Outputs of `DynamicQuantizeLinear`'s scale and of products of it with constants: the
    /// rescaling `Mul`s that read them are dropped, the constant factor moved into the weight.
    dyn_scales: HashMap<String, Option<Values>>,
    /// Outputs of `ConvInteger` / `MatMulInteger`, rewritten.
    int_outputs: HashMap<String, IntProduct>,
    /// Names computed from constants alone by `Identity` and `Reshape`, and what each `Reshape`
    /// of such a name reshapes (a dynamic convolution's bias).
    constlike: HashSet<String>,
    reshaped: HashMap<String, String>,
    /// The node of [`Rewrite::out`] that produces each name of the rewritten graph.
    producer: HashMap<String, usize>,
    /// Names whose quantization clips at zero: non-negative in the quantized file.
    nonneg: HashSet<String>,
    /// The rewritten graph's nodes.
    out: Vec<pb::NodeProto>,
    /// The file's nodes that read each name: their op and first output.
    readers: HashMap<String, Vec<(String, String)>>,
    /// (form, count) of what was rewritten.
    counts: HashMap<&'static str, usize>,
    /// The default domain's opset.
    opset: i64,
    /// The element type of each initializer and `Constant`.
    types: HashMap<String, i32>,
}

/// A rewritten `ConvInteger` / `MatMulInteger`: its weight in [`Rewrite::weights`], the axis of
/// the weight's output channels, the node in [`Rewrite::out`].
#[derive(Clone, Copy)]
struct IntProduct {
    weight: Option<usize>,
    axis: usize,
    node: usize,
}

impl Rewrite {
    /// Adds a node of the float network, its inputs renamed; its index.
    fn emit(&mut self, mut n: pb::NodeProto) -> usize {
        for i in n.input.iter_mut().filter(|i| !i.is_empty()) {
            *i = self.resolve(i);
        }
        let from_constants =
            n.input.iter().filter(|i| !i.is_empty()).all(|i| self.constlike.contains(i));
        if from_constants && matches!(n.op_type.as_str(), "Identity" | "Reshape") {
            self.constlike.extend(n.output.iter().cloned());
            if let (true, Some(o), Some(i)) =
                (n.op_type == "Reshape", n.output.first(), n.input.first())
            {
                self.reshaped.insert(o.clone(), i.clone());
            }
        }
        for o in &n.output {
            self.producer.insert(o.clone(), self.out.len());
        }
        self.out.push(n);
        self.out.len() - 1
    }

    fn keep(&mut self, n: pb::NodeProto) {
        self.emit(n);
    }

    /// Whether a clip at zero of `x` stands for a ReLU the quantizer removed: `x` is the output
    /// of a product with weights (convolution, matrix product, BatchNorm), or a sum of such an
    /// output with something signed (a residual sum). A sum of non-negative values, or of a
    /// bounded value and a constant (GELU's `1 + erf(x)`), is non-negative without a ReLU.
    fn removed_relu(&self, x: &str) -> bool {
        let node = |x: &str| self.producer.get(x).map(|&i| &self.out[i]);
        let Some(n) = node(x) else { return false };
        if is_product(&n.op_type) {
            return true;
        }
        let inputs = || n.input.iter().filter(|i| !i.is_empty());
        matches!(n.op_type.as_str(), "Add" | "Sum")
            && !inputs().all(|i| self.nonneg.contains(i))
            && inputs().any(|i| node(i).is_some_and(|p| is_product(&p.op_type)))
    }

    /// `out` is the float value `x`, quantized with a clip at zero (up to `top`) or not:
    /// through a ReLU when the clip stands for one the quantizer removed
    /// ([`Rewrite::removed_relu`]), a ReLU6 when the range ends at 6 (calibration saw the
    /// activation saturate), else `x` itself (noted as non-negative when it clips).
    fn clipped(&mut self, x: String, out: String, clip: Option<f32>) {
        let Some(top) = clip.filter(|_| self.removed_relu(&x) && !self.feeds_activation(&out))
        else {
            if clip.is_some() {
                self.nonneg.insert(x.clone());
            }
            self.alias.insert(out, x);
            return;
        };
        let relu = format!("{out}/nape_relu");
        self.alias.insert(out, relu.clone());
        if (top - 6.0).abs() <= 6e-3 && self.opset >= 11 {
            let bound =
                |rw: &mut Self, s: &str, v: f32| rw.weight(format!("{relu}/{s}"), vec![], &[v]);
            let input = vec![x, bound(self, "min", 0.0), bound(self, "max", 6.0)];
            self.emit(node("Clip", &relu, input, vec![relu.clone()]));
            self.count("ReLU6");
        } else {
            self.emit(node("Relu", &relu, vec![x], vec![relu.clone()]));
        }
        self.nonneg.insert(relu);
        self.count("ReLU");
    }

    /// Whether the quantized value `q` goes (through its `DequantizeLinear`s) into an activation
    /// function: a quantizer folds only the ReLU that follows a product, so a clip before
    /// another activation (a SiLU's sigmoid) is what calibration saw, not a removed ReLU.
    fn feeds_activation(&self, q: &str) -> bool {
        let readers = |name: &str| self.readers.get(name).into_iter().flatten();
        readers(q)
            .flat_map(|(op, out)| match op.as_str() {
                "DequantizeLinear" => readers(out).map(|(op, _)| op.as_str()).collect(),
                _ => vec![op.as_str()],
            })
            .any(is_activation)
    }

    /// Records the tensor a `Constant` node makes.
    fn remember_constant(&mut self, n: &pb::NodeProto) {
        let value = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
        if let (true, Some(t), Some(o)) = (n.op_type == "Constant", value, n.output.first()) {
            self.consts.insert(o.clone(), pb::TensorProto { name: o.clone(), ..t.clone() });
            self.constlike.insert(o.clone());
            self.types.insert(o.clone(), t.data_type);
        }
    }

    /// The clip of the quantized output whose zero point is input `slot` of `n` (its scale the
    /// input before), when it clips at zero: its zero point is its type's minimum (absent,
    /// uint8's 0), so every negative value becomes 0. Quantizers fold a ReLU after a
    /// convolution, product or sum into that clip. `Some(top)`, the largest value the output
    /// holds (`NaN` when the scale is not known), or `None`.
    fn clip_at_zero(&self, n: &pb::NodeProto, slot: usize) -> Option<f32> {
        let scale = self.constant(n, slot - 1).and_then(|s| s.data.first().copied());
        let (min, max) = match self.input(n, slot).and_then(|name| self.consts.get(&name)) {
            None if n.input.get(slot).is_none_or(|i| i.is_empty()) => (0.0, 255.0),
            None => return None,
            Some(t) => match t.data_type {
                2 => (0.0, 255.0),
                4 => (0.0, 65535.0),
                3 => (i8::MIN as f32, i8::MAX as f32),
                5 => (i16::MIN as f32, i16::MAX as f32),
                _ => return None,
            },
        };
        let zp = self.input(n, slot).and_then(|name| self.consts.get(&name)).and_then(values);
        let at_min = zp.is_none_or(|v| v.data.iter().all(|&z| z == min));
        at_min.then(|| scale.map_or(f32::NAN, |s| (max - min) * s))
    }

    fn resolve(&self, name: &str) -> String {
        let mut n = name;
        for _ in 0..64 {
            match self.alias.get(n) {
                Some(next) => n = next,
                None => break,
            }
        }
        n.to_string()
    }

    fn input(&self, n: &pb::NodeProto, slot: usize) -> Option<String> {
        n.input.get(slot).filter(|s| !s.is_empty()).map(|s| self.resolve(s))
    }

    fn constant(&self, n: &pb::NodeProto, slot: usize) -> Option<Values> {
        self.input(n, slot).and_then(|name| self.consts.get(&name)).and_then(values)
    }

    fn count(&mut self, form: &'static str) {
        *self.counts.entry(form).or_default() += 1;
    }

    /// The input at `slot` as a float tensor: a new float weight named `name` when it is an
    /// integer constant (scale and zero point at `slot + 1`, `slot + 2`), else the input itself.
    fn float_input(&mut self, n: &pb::NodeProto, slot: usize, axis: i64, name: String) -> String {
        let Some(x) = self.input(n, slot) else { return String::new() };
        if let Some(dims) = self.int_inputs.get(&x) {
            return self.declare(name, dims.clone());
        }
        let Some(t) = self.consts.get(&x).filter(|t| is_integer(t)) else { return x };
        let Some(q) = values(t) else { return x };
        let Some(scale) = self.constant(n, slot + 1) else { return self.declare(name, q.dims) };
        let zp = self.constant(n, slot + 2);
        match dequantized(&q, &scale, zp.as_ref(), axis) {
            Some(data) => self.weight(name, q.dims, &data),
            None => x,
        }
    }

    fn weight(&mut self, name: String, dims: Vec<i64>, data: &[f32]) -> String {
        self.weights.push(float_tensor(name.clone(), dims, data));
        name
    }

    /// A float weight known by its shape only: the scale that dequantizes it is not in the
    /// reading (the shapes-only reader leaves out float tensors of more than
    /// [`super::slim::KEEP_ELEMENTS`] values, per-channel scales among them), so it becomes a
    /// declared weight input, as the shapes-only reader makes of float weights.
    fn declare(&mut self, name: String, dims: Vec<i64>) -> String {
        let shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
        self.declared.push(super::write::value_info(&name, &shape));
        name
    }

    /// An int32 bias of a quantized product, in the float network's units (`b * s_x * s_w`).
    fn bias(
        &mut self,
        n: &pb::NodeProto,
        slot: usize,
        sx: usize,
        sw: usize,
        name: String,
    ) -> Option<String> {
        let b = self.input(n, slot)?;
        let Some(q) = self.consts.get(&b).and_then(values) else { return Some(b) };
        let (Some(x), Some(w)) = (self.constant(n, sx), self.constant(n, sw)) else {
            return Some(self.declare(name, q.dims));
        };
        let (Some(&sx), Some(&sw)) = (x.data.first(), w.data.first()) else { return Some(b) };
        let scale: Vec<f32> = if w.data.len() == q.data.len() {
            w.data.iter().map(|s| s * sx).collect()
        } else {
            vec![sw * sx]
        };
        let scale = Values { dims: vec![scale.len() as i64], data: scale };
        let data = dequantized(&q, &scale, None, 0)?;
        Some(self.weight(name, q.dims, &data))
    }
}

/// Rewrites a quantized model into its float network in place, leaving a note in its metadata
/// ([`super::read_notes`]) when anything was rewritten.
pub(super) fn dequantize(model: &mut pb::ModelProto) {
    let opset = super::lower::opset(model);
    let Some(graph) = model.graph.as_mut() else { return };
    if !graph.node.iter().any(|n| is_quantized(&n.op_type)) {
        return;
    }
    let mut rw = Rewrite { opset, int_inputs: integer_inputs(graph), ..Default::default() };
    for t in graph.initializer.iter().filter(|t| is_integer(t) || numel(t) <= MAX_SCALE) {
        rw.consts.insert(t.name.clone(), t.clone());
    }
    rw.constlike.extend(graph.initializer.iter().map(|t| t.name.clone()));
    rw.types.extend(graph.initializer.iter().map(|t| (t.name.clone(), t.data_type)));
    for n in &graph.node {
        let first = n.output.first().cloned().unwrap_or_default();
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            rw.readers.entry(i.clone()).or_default().push((n.op_type.clone(), first.clone()));
        }
    }
    for n in std::mem::take(&mut graph.node) {
        rw.remember_constant(&n);
        rewrite(&mut rw, n);
    }
    for o in graph.output.iter() {
        let to = rw.resolve(&o.name);
        if to != o.name {
            let name = format!("{}/nape_output", o.name);
            rw.emit(node("Identity", &name, vec![to], vec![o.name.clone()]));
        }
    }
    graph.node = std::mem::take(&mut rw.out);
    graph.initializer.append(&mut rw.weights);
    let used: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    let unused: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| is_integer(t) && !used.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !unused.contains(&t.name));
    graph.input.retain(|i| !rw.int_inputs.contains_key(&i.name) || used.contains(i.name.as_str()));
    let names: Vec<String> = rw.declared.iter().map(|v| v.name.clone()).collect();
    graph.input.append(&mut rw.declared);
    if !names.is_empty() {
        let key = super::WEIGHT_INPUTS_KEY.to_string();
        model.metadata_props.push(pb::StringStringEntryProto { key, value: names.join(",") });
    }
    note(model, &rw.counts);
}

/// The graph inputs of int8 or uint8 with fixed dims: quantized weights known by their shape.
fn integer_inputs(graph: &pb::GraphProto) -> HashMap<String, Vec<i64>> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|vi| !inits.contains(vi.name.as_str()))
        .filter(|vi| matches!(super::inputs::elem_type(vi), Some(2 | 3)))
        .filter_map(|vi| {
            let dims: Option<Vec<i64>> = super::inputs::declared_dims(vi).into_iter().collect();
            Some((vi.name.clone(), dims?))
        })
        .collect()
}

/// Float tensors of at most this many values are read as possible scales (a per-channel scale
/// has one per channel); larger ones are weights, which the rewrite only passes on by name.
const MAX_SCALE: u64 = 1 << 16;

fn numel(t: &pb::TensorProto) -> u64 {
    t.dims.iter().map(|&d| d.max(0) as u64).product()
}

/// One node of the file, as the nodes of the float network that stand for it (none for a
/// quantize or dequantize op).
fn rewrite(rw: &mut Rewrite, n: pb::NodeProto) {
    match n.op_type.as_str() {
        "QuantizeLinear" => quantize(rw, n),
        "DequantizeLinear" => dequantize_linear(rw, n),
        "Identity"
            if !n.output.is_empty()
                && rw.input(&n, 0).is_some_and(|x| rw.consts.get(&x).is_some_and(is_integer)) =>
        {
            // a copy of an integer weight (a shared bias): each dequantization makes its own
            rw.alias.insert(n.output[0].clone(), rw.input(&n, 0).unwrap_or_default());
        }
        "DynamicQuantizeLinear" => dynamic_quantize(rw, n),
        "ConvInteger" | "MatMulInteger" => integer_product(rw, n),
        "MatMulNBits" => nbits::matmul_nbits(rw, n),
        "Cast" | "Add" | "Mul" => after_integer_product(rw, n),
        op if op.starts_with("QLinear") || op == "QGemm" => qoperator(rw, n),
        _ => {
            rw.emit(n);
        }
    }
}

/// `DequantizeLinear` of a weight makes its float weight; of an activation, it is that
/// activation. A weight it cannot dequantize (4-bit types, blocked quantization) is kept as the
/// file has it, and the note says that it is not counted.
fn dequantize_linear(rw: &mut Rewrite, n: pb::NodeProto) {
    let out = n.output.first().cloned().unwrap_or_default();
    let x = if int_attr(&n, "block_size", 0) == 0 {
        rw.float_input(&n, 0, int_attr(&n, "axis", 1), out.clone())
    } else {
        rw.input(&n, 0).unwrap_or_default()
    };
    rw.count("QDQ");
    if x != out && rw.types.get(&x).is_some_and(|&t| !super::is_float_type(t)) {
        rw.count("unread");
        rw.keep(n);
    } else if x != out {
        rw.alias.insert(out, x);
    }
}

/// `QuantizeLinear(x)` is `x`, or `Relu(x)` when it stands for a ReLU the quantizer removed
/// ([`Rewrite::clip_at_zero`]).
fn quantize(rw: &mut Rewrite, n: pb::NodeProto) {
    rw.count("QDQ");
    let (Some(x), Some(out)) = (rw.input(&n, 0), n.output.first().cloned()) else { return };
    let clips = rw.clip_at_zero(&n, 2);
    rw.clipped(x, out, clips);
}

fn is_activation(op: &str) -> bool {
    matches!(
        op,
        "Relu"
            | "Clip"
            | "Sigmoid"
            | "HardSigmoid"
            | "HardSwish"
            | "Tanh"
            | "Erf"
            | "Softplus"
            | "LeakyRelu"
            | "Elu"
            | "Selu"
            | "Gelu"
            | "Mish"
            | "QLinearSigmoid"
            | "QLinearLeakyRelu"
    )
}

/// Products with weights: ops a quantizer folds a following ReLU into.
fn is_product(op: &str) -> bool {
    matches!(op, "Conv" | "ConvTranspose" | "Gemm" | "MatMul" | "BatchNormalization")
}

/// The QOperator ops as their float ops, and a ReLU after those whose output zero point at the
/// type's minimum stands for one.
fn qoperator(rw: &mut Rewrite, n: pb::NodeProto) {
    let out0 = n.output.first().cloned().unwrap_or_default();
    let name = |s: &str| format!("{out0}/nape_{s}");
    let (op, input, zp_slot) = match n.op_type.as_str() {
        "QLinearConv" => {
            let mut input = vec![rw.input(&n, 0).unwrap_or_default()];
            input.push(rw.float_input(&n, 3, 0, name("w")));
            input.extend(rw.bias(&n, 8, 1, 4, name("b")));
            ("Conv".to_string(), input, Some(7))
        }
        "QLinearMatMul" => {
            let a = rw.float_input(&n, 0, -1, name("a"));
            ("MatMul".into(), vec![a, rw.float_input(&n, 3, -1, name("b"))], Some(7))
        }
        "QGemm" => {
            let axis = if int_attr(&n, "transB", 0) == 1 { 0 } else { 1 };
            let mut input = vec![rw.float_input(&n, 0, 1, name("a"))];
            input.push(rw.float_input(&n, 3, axis, name("b")));
            input.extend(rw.bias(&n, 6, 1, 4, name("c")));
            ("Gemm".into(), input, Some(8))
        }
        "QLinearAdd" | "QLinearMul" => {
            let a = rw.float_input(&n, 0, 1, name("a"));
            let b = rw.float_input(&n, 3, 1, name("b"));
            let zp = (n.op_type == "QLinearAdd").then_some(7);
            (n.op_type[7..].to_string(), vec![a, b], zp)
        }
        "QLinearConcat" => {
            let xs = (2..n.input.len()).step_by(3).filter_map(|s| rw.input(&n, s)).collect();
            ("Concat".into(), xs, None)
        }
        "QLinearGlobalAveragePool"
        | "QLinearAveragePool"
        | "QLinearSigmoid"
        | "QLinearLeakyRelu"
        | "QLinearSoftmax"
            if int_attr(&n, "channels_last", 0) == 0 =>
        {
            (n.op_type[7..].to_string(), vec![rw.input(&n, 0).unwrap_or_default()], None)
        }
        _ => {
            rw.emit(n);
            return;
        }
    };
    rw.count("QOperator");
    let clips = zp_slot.and_then(|s| rw.clip_at_zero(&n, s));
    let pre = name("float");
    let mut f = node(&op, &n.name, input, vec![pre.clone()]);
    let drop = ["channels_last", "opset"];
    f.attribute = n.attribute.into_iter().filter(|a| !drop.contains(&a.name.as_str())).collect();
    rw.emit(f);
    rw.clipped(pre, out0, clips);
}

/// The note of a rewrite, kept in the model's metadata for the CG.
fn note(model: &mut pb::ModelProto, counts: &HashMap<&'static str, usize>) {
    let mut forms: Vec<String> = counts
        .iter()
        .filter(|(f, _)| !matches!(**f, "ReLU" | "ReLU6" | "unread"))
        .map(|(f, c)| format!("{f}, {c} ops"))
        .collect();
    if forms.is_empty() {
        return;
    }
    forms.sort();
    let relus = match (counts.get("ReLU"), counts.get("ReLU6")) {
        (Some(n), six) => format!(
            "; {n} ReLUs the quantizer folded into a zero point restored ({} of them ReLU6, whose range ends at 6; a ReLU6 whose range ends below reads as ReLU)",
            six.unwrap_or(&0)
        ),
        (None, _) => String::new(),
    };
    let unread = match counts.get("unread") {
        Some(n) => format!("; {n} weights quantized in a form nape does not read (4-bit, blocked) are not counted as parameters"),
        None => String::new(),
    };
    let text = format!(
        "a quantized network ({}): read as the float network it quantizes, weights dequantized{relus}{unread}; its counts, costs and prediction are that network's, and the quantization itself is not a feature",
        forms.join("; ")
    );
    super::add_read_note(model, text);
}
