//! Runs a computation graph with libtorch (tch): the stage between the CG and the proxies.
//!
//! An [`Executor`] turns a [`Cg`] (loaded from ONNX, so its nodes carry their ONNX attributes and
//! static operands) into tch tensors: one trainable tensor per parameter operand, one constant
//! per constant operand, and a forward pass that evaluates the nodes in topological order with
//! ONNX semantics (`ops.rs`). Parameters can be (re)initialised by the schemes the zero-cost
//! proxies prescribe ([`Init`]); the forward pass can tap chosen activations (every ReLU's input or
//! output, every conv/linear output), and gradients flow through everything, so `backward` on
//! any scalar of the outputs gives per-parameter and per-activation gradients.
//!
//! The executor runs on the CPU by default, in float32 or float64, and on CUDA when asked
//! ([`device::resolve`]). It builds nothing from tract: tract is only the loader's shape
//! analyser, and the agreement of the two on the same weights is tested (`tests/exec.rs`).

mod batchnorm;
pub mod device;
mod init;
mod movement;
mod norms;
mod ops;
mod recurrent;
mod samples;

/// A libtorch call's result.
pub(crate) type TchResult<T> = std::result::Result<T, tch::TchError>;

pub use batchnorm::agrees as batch_norm_kernel_agrees;
pub use init::Init;
use init::{fan_in, role_of};
pub use samples::tap_grads;

/// `f` without autograd, the grad mode restored however `f` ends. `tch::no_grad` restores it
/// only when `f` returns: a panic inside, caught as one proxy's error on one network
/// ([`crate::proxies::guarded`]), left the worker thread without gradients, and every later
/// gradient proxy on that thread failed ("element 0 of tensors does not require grad"), an
/// error cached as the networks' own (a long `--batch 8` run over ImageNet files, 2026-12-06).
/// clippy.toml forbids `tch::no_grad`.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _restore = tch::no_grad_guard();
    f()
}

use crate::error::{Error, Result};
use crate::graph::{Cg, ConstValue, OpKind, OpNode, Operand};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use std::collections::{BTreeMap, HashMap};
use tch::{Device, Kind, Tensor};

/// What a parameter is to the network: the proxies score only the weights of convolutions and
/// fully-connected layers (`nn.Conv2d`/`nn.Linear` in the reference code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The weight of a convolution or a matrix product with a weight (Conv, Gemm, MatMul).
    Weight,
    /// The bias of a convolution or Gemm.
    Bias,
    /// A normalisation's scale (gamma).
    NormScale,
    /// A normalisation's shift (beta).
    NormShift,
    /// The weight of a transposed convolution (a weight, but not an `nn.Conv2d`).
    TransposedWeight,
    /// Anything else (positional embeddings, PReLU slopes, class tokens, layer scales ...).
    Other,
}

/// One trainable tensor.
#[derive(Debug)]
pub struct Param {
    /// The operand's name in the source file.
    pub name: String,
    /// The tensor (a leaf that requires grad).
    pub tensor: Tensor,
    /// Its role.
    pub role: Role,
    /// Fan-in as PyTorch computes it for this layer (for Kaiming init and bias bounds).
    pub fan_in: usize,
    /// The node that first reads it.
    pub node: String,
}

/// How the executor runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecOptions {
    /// Where tensors live.
    pub device: Device,
    /// float64 instead of float32 (SynFlow runs in float64).
    pub double: bool,
    /// Training mode: batch normalisation uses batch statistics (how the reference proxy code
    /// runs freshly built networks); evaluation mode uses the running statistics.
    pub train: bool,
    /// Keep batch normalisation; `false` makes every BatchNorm an identity (the reference's
    /// `bn=False` copies, used by SynFlow).
    pub keep_bn: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions { device: Device::Cpu, double: false, train: true, keep_bn: true }
    }
}

/// Which activations a forward pass hands back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taps {
    /// The input of every ReLU node.
    pub relu_in: bool,
    /// The output of every ReLU node.
    pub relu_out: bool,
    /// The output of every node with a [`Role::Weight`] parameter (conv and linear layers).
    pub weighted_out: bool,
}

/// One tapped activation.
#[derive(Debug)]
pub struct Tap {
    /// The node's name.
    pub node: String,
    /// The activation.
    pub value: Tensor,
    /// For a conv/linear output: its weight's fan-in as PyTorch computes it (the weights
    /// feeding one output channel); `None` for a ReLU tap.
    pub fan_in: Option<usize>,
    /// Where a batch ran one sample at a time ([`Executor::forward`]): the samples' tensors
    /// that `value` joins, the ones the loss depends on (a gradient is taken with respect to
    /// them and joined as they are, [`tap_grads`]); empty otherwise.
    pub parts: Vec<Tensor>,
}

/// The result of a forward pass.
#[derive(Debug, Default)]
pub struct Forward {
    /// One tensor per Output node, in graph order.
    pub outputs: Vec<Tensor>,
    /// ReLU inputs, when asked for, in topological order.
    pub relu_in: Vec<Tap>,
    /// ReLU outputs, when asked for.
    pub relu_out: Vec<Tap>,
    /// Conv/linear outputs, when asked for.
    pub weighted_out: Vec<Tap>,
}

/// A CG made runnable: parameters, constants and the evaluation order.
pub struct Executor<'a> {
    cg: &'a Cg,
    opts: ExecOptions,
    order: Vec<NodeIndex>,
    /// Parameters by operand name, in first-use order.
    params: Vec<Param>,
    param_index: HashMap<String, usize>,
    consts: HashMap<String, Tensor>,
    /// The batch size the CG's shapes were bound at.
    cg_batch: i64,
    /// How many consumers read each node output (to free activations early).
    uses: HashMap<(NodeIndex, usize), usize>,
}

impl<'a> Executor<'a> {
    /// Builds the executor: allocates parameters (initialised by `init`, with `seed`) and
    /// constants. Errors name the node whose operand cannot be built.
    pub fn new(cg: &'a Cg, opts: ExecOptions, init: Init, seed: u64) -> Result<Executor<'a>> {
        let kind = if opts.double { Kind::Double } else { Kind::Float };
        let order: Vec<NodeIndex> = cg.graph.node_indices().collect();
        if let Some(&n) = order.iter().find(|&&n| cg.graph[n].bounded) {
            let msg = "its shapes depend on the input's values (the graph holds their upper bounds), and the executor runs graphs of exact shapes only";
            return Err(node_error(cg, n, msg.into()));
        }
        let mut params: Vec<Param> = Vec::new();
        let mut param_index = HashMap::new();
        let mut consts = HashMap::new();
        // the bias of a layer takes its weight's fan-in
        for &n in &order {
            let node = &cg.graph[n];
            let weight_fan_in =
                node.operands.iter().find(|o| o.param && o.slot == 1).map(|o| fan_in(node, o));
            for op in &node.operands {
                if op.param {
                    if param_index.contains_key(&op.name) {
                        continue;
                    }
                    let role = role_of(node, op);
                    let fi = match role {
                        Role::Bias => weight_fan_in.unwrap_or_else(|| fan_in(node, op)),
                        _ => fan_in(node, op),
                    };
                    let dims: Vec<i64> = op.shape.iter().map(|&d| d as i64).collect();
                    let tensor = Tensor::zeros(&dims, (kind, opts.device));
                    param_index.insert(op.name.clone(), params.len());
                    params.push(Param {
                        name: op.name.clone(),
                        tensor,
                        role,
                        fan_in: fi.max(1),
                        node: node.name.clone(),
                    });
                } else if !consts.contains_key(&op.name) {
                    let t = const_tensor(node, op, kind, opts.device).map_err(|msg| {
                        node_error(cg, n, format!("operand '{}': {msg}", op.name))
                    })?;
                    consts.insert(op.name.clone(), t);
                }
            }
        }
        let mut uses = HashMap::new();
        for e in (&cg.graph).edge_references() {
            *uses.entry((e.source(), e.weight().src_slot)).or_insert(0) += 1;
        }
        let cg_batch = cg.batch() as i64;
        let mut ex = Executor { cg, opts, order, params, param_index, consts, cg_batch, uses };
        ex.init(init, seed)?;
        Ok(ex)
    }

    /// The options it runs with.
    pub fn options(&self) -> ExecOptions {
        self.opts
    }

    /// The float kind of its tensors.
    pub fn kind(&self) -> Kind {
        if self.opts.double {
            Kind::Double
        } else {
            Kind::Float
        }
    }

    /// Its parameters, in first-use (topological) order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Mutable access to the parameters (for proxies that rewrite weights, e.g. SynFlow's
    /// absolute values).
    pub fn params_mut(&mut self) -> &mut [Param] {
        &mut self.params
    }

    /// The constant operand `name` (running statistics, shapes, scalars), if the graph has it.
    pub fn constant(&self, name: &str) -> Option<&Tensor> {
        self.consts.get(name)
    }

    /// The parameter `name`, if the graph has it.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.param_index.get(name).map(|&i| &self.params[i])
    }

    /// Trainable parameter count.
    pub fn param_count(&self) -> i64 {
        self.params.iter().map(|p| p.tensor.numel() as i64).sum()
    }

    /// (Re)initialises every parameter (see [`Init`]).
    pub fn init(&mut self, init: Init, seed: u64) -> Result<()> {
        let (kind, device, cg) = (self.kind(), self.opts.device, self.cg);
        let values: HashMap<&str, &Operand> = cg
            .graph
            .node_weights()
            .flat_map(|n| n.operands.iter())
            .filter(|o| o.param)
            .map(|o| (o.name.as_str(), o))
            .collect();
        for (i, p) in self.params.iter_mut().enumerate() {
            let fail = |msg: String| Error::Run {
                path: cg.source.clone(),
                msg: format!("parameter '{}' of node '{}': {msg}", p.name, p.node),
            };
            let data: Vec<f64> = match init {
                Init::File => match values.get(p.name.as_str()).and_then(|o| o.value.as_ref()) {
                    Some(ConstValue::Float(v)) => v.iter().map(|&x| x as f64).collect(),
                    _ => {
                        return Err(fail("no values in the file (exported without weights); use another initialisation".into()))
                    }
                },
                Init::Abs => {
                    let t = p.tensor.f_abs().map_err(|err| fail(ops::e(err)))?;
                    p.tensor = t.detach().set_requires_grad(true);
                    continue;
                }
                // an allocation that fails (a run capped in address space) fails this
                // network's proxies, where Rust would abort the whole run
                _ => init::values(init, p.role, p.fan_in, p.tensor.numel() as i64, seed, i as u64)
                    .map_err(fail)?,
            };
            let shape = p.tensor.size();
            let t = Tensor::f_from_slice(&data)
                .and_then(|t| t.f_to_kind(kind))
                .and_then(|t| t.f_reshape(&shape))
                .and_then(|t| t.f_to_device(device))
                .map_err(|err| fail(ops::e(err)))?;
            p.tensor = t.set_requires_grad(true);
        }
        Ok(())
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Runs the graph on `inputs` (one tensor per Input node, in graph order; batch size free).
    /// A graph bound at batch 1 whose samples nothing mixes runs a larger batch one sample at
    /// a time ([`Executor::runs_per_sample`]).
    pub fn forward(&self, inputs: &[Tensor], taps: Taps) -> Result<Forward> {
        let batch = leading_batch(inputs);
        if self.runs_per_sample(batch) {
            return samples::forward(self, inputs, taps, batch);
        }
        self.forward_batch(inputs, taps)
    }

    /// [`Executor::forward`] on the whole batch at once.
    fn forward_batch(&self, inputs: &[Tensor], taps: Taps) -> Result<Forward> {
        let cg = self.cg;
        let mut values: HashMap<(NodeIndex, usize), Tensor> = HashMap::new();
        let mut remaining = self.uses.clone();
        let mut fwd = Forward::default();
        let mut next_input = 0usize;
        let mut relus: HashMap<Key, Tensor> = HashMap::new();
        let batch = leading_batch(inputs);
        let ctx = ops::Ctx {
            kind: self.kind(),
            device: self.opts.device,
            cg_batch: self.cg_batch,
            batch,
            recording: Default::default(),
        };
        for &n in &self.order {
            let node = &cg.graph[n];
            let Gathered { acts, read, freed } = gather(cg, n, &mut values, &mut remaining)?;
            let outs: Vec<Tensor> = match node.kind {
                OpKind::Input => {
                    next_input += 1;
                    vec![self.input_value(n, inputs, next_input - 1, &ctx)?]
                }
                OpKind::Output => {
                    if let Some(x) = acts.into_iter().next() {
                        fwd.outputs.push(x);
                    }
                    continue;
                }
                OpKind::BatchNorm if !self.opts.keep_bn => acts.into_iter().take(1).collect(),
                _ => {
                    if taps.relu_in && node.kind == OpKind::Relu {
                        if let Some(x) = acts.first() {
                            fwd.relu_in.push(Tap {
                                node: node.name.clone(),
                                value: x.shallow_clone(),
                                fan_in: None,
                                parts: Vec::new(),
                            });
                        }
                    }
                    let memo = read.filter(|_| acts.len() == 1).map(|k| (k, &mut relus));
                    self.eval_node(n, &acts, &ctx, memo)?
                }
            };
            for key in freed {
                relus.remove(&key);
            }
            if let Some(y) = outs.first() {
                self.tap_output(node, y, taps, &mut fwd);
            }
            for (slot, t) in outs.into_iter().enumerate() {
                if self.uses.contains_key(&(n, slot)) {
                    values.insert((n, slot), t);
                }
            }
        }
        Ok(fwd)
    }

    /// The graph input `n`, the `i`-th of its inputs: `inputs[i]` in the input's kind, on the device.
    fn input_value(
        &self,
        n: NodeIndex,
        inputs: &[Tensor],
        i: usize,
        ctx: &ops::Ctx,
    ) -> Result<Tensor> {
        let Some(x) = inputs.get(i) else {
            let msg = format!("the graph has more inputs than the {} given", inputs.len());
            return Err(node_error(self.cg, n, msg));
        };
        Ok(x.to_kind(ops::input_kind(&self.cg.graph[n], ctx.kind)).to_device(ctx.device))
    }

    /// Keeps `y`, the first output of `node`, where `taps` asks for it: a ReLU's output, or
    /// the output of a node with a conv/linear weight.
    fn tap_output(&self, node: &OpNode, y: &Tensor, taps: Taps, fwd: &mut Forward) {
        let tap = |fan_in| Tap {
            node: node.name.clone(),
            value: y.shallow_clone(),
            fan_in,
            parts: Vec::new(),
        };
        if taps.relu_out && node.kind == OpKind::Relu {
            fwd.relu_out.push(tap(None));
        }
        if !taps.weighted_out {
            return;
        }
        let weight = node.operands.iter().filter(|o| o.param).find_map(|o| {
            let p = &self.params[*self.param_index.get(&o.name)?];
            (p.role == Role::Weight).then_some(p.fan_in)
        });
        if let Some(fan_in) = weight {
            fwd.weighted_out.push(tap(Some(fan_in)));
        }
    }

    /// Evaluates node `n` on its activations. A ReLU whose one input needs no gradient (a pass
    /// under `no_grad`) is computed once per input and its output shared: NAS cells export a
    /// ReLU per edge, several on one node's output. Sharing changes no value; where the input
    /// needs a gradient each ReLU runs, so the backward sums the same terms in the same order.
    fn eval_node(
        &self,
        n: NodeIndex,
        acts: &[Tensor],
        ctx: &ops::Ctx,
        memo: Option<(Key, &mut HashMap<Key, Tensor>)>,
    ) -> Result<Vec<Tensor>> {
        let node = &self.cg.graph[n];
        let memo = memo.filter(|_| node.kind == OpKind::Relu && !acts[0].requires_grad());
        if let Some((key, relus)) = &memo {
            if let Some(y) = relus.get(key) {
                return Ok(vec![y.shallow_clone()]);
            }
        }
        let args = self.arguments(node, acts);
        let outs = ops::eval(node, &args, ctx, self.opts.train)
            .map_err(|msg| node_error(self.cg, n, msg))?;
        if let (Some((key, relus)), Some(y)) = (memo, outs.first()) {
            relus.insert(key, y.shallow_clone());
        }
        Ok(outs)
    }

    /// The node's arguments in ONNX slot order: activations where it reads activations,
    /// parameters and constants where it reads static operands, `None` for omitted inputs.
    fn arguments(&self, node: &OpNode, acts: &[Tensor]) -> Vec<Option<Tensor>> {
        let act_slots: Vec<usize> = if node.act_slots.len() == acts.len() {
            node.act_slots.clone()
        } else {
            (0..acts.len()).collect()
        };
        let len = act_slots
            .iter()
            .copied()
            .chain(node.operands.iter().map(|o| o.slot))
            .max()
            .map(|m| m + 1)
            .unwrap_or(0);
        let mut args: Vec<Option<Tensor>> = (0..len).map(|_| None).collect();
        for (slot, t) in act_slots.iter().zip(acts) {
            args[*slot] = Some(t.shallow_clone());
        }
        for op in &node.operands {
            let t = if op.param {
                self.param_index.get(&op.name).map(|&i| self.params[i].tensor.shallow_clone())
            } else {
                self.consts.get(&op.name).map(|t| t.shallow_clone())
            };
            args[op.slot] = t;
        }
        args
    }
}

/// A node output: the node and the output's slot.
type Key = (NodeIndex, usize);

/// A node's activation inputs, read from the computed values.
struct Gathered {
    /// By destination slot.
    acts: Vec<Tensor>,
    /// The value the last input edge read.
    read: Option<Key>,
    /// The values this node was the last to read (dropped from `values`).
    freed: Vec<Key>,
}

/// Reads node `n`'s inputs from `values`, dropping each value its last consumer has read.
fn gather(
    cg: &Cg,
    n: NodeIndex,
    values: &mut HashMap<Key, Tensor>,
    remaining: &mut HashMap<Key, usize>,
) -> Result<Gathered> {
    let mut acts: Vec<(usize, Tensor)> = Vec::new();
    let mut freed = Vec::new();
    let mut read = None;
    for e in cg.graph.edges_directed(n, Direction::Incoming) {
        let key = (e.source(), e.weight().src_slot);
        let Some(v) = values.get(&key) else {
            return Err(node_error(cg, n, format!("input '{}' was not computed", e.weight().name)));
        };
        acts.push((e.weight().dst_slot, v.shallow_clone()));
        read = Some(key);
        if let Some(r) = remaining.get_mut(&key) {
            *r -= 1;
            if *r == 0 {
                values.remove(&key);
                freed.push(key);
            }
        }
    }
    acts.sort_by_key(|(s, _)| *s);
    Ok(Gathered { acts: acts.into_iter().map(|(_, t)| t).collect(), read, freed })
}

/// A constant operand as a tensor. Floats take the executor's kind; integers stay int64.
/// Running statistics exported without data start as PyTorch's (mean 0, variance 1).
fn const_tensor(
    node: &OpNode,
    op: &Operand,
    kind: Kind,
    device: Device,
) -> std::result::Result<Tensor, String> {
    let dims: Vec<i64> = op.shape.iter().map(|&d| d as i64).collect();
    let numel: usize = op.shape.iter().product();
    match &op.value {
        Some(ConstValue::Float(v)) if v.len() == numel => {
            Ok(Tensor::from_slice(v).to_kind(kind).reshape(&dims).to_device(device))
        }
        Some(ConstValue::Int(v)) if v.len() == numel => {
            Ok(Tensor::from_slice(v).reshape(&dims).to_device(device))
        }
        Some(_) => {
            Err(format!("holds a number of values that does not match its shape {:?}", op.shape))
        }
        None => match (node.onnx_op.as_str(), op.slot) {
            ("BatchNormalization", 3) => Ok(Tensor::zeros(&dims, (kind, device))),
            ("BatchNormalization", 4) => Ok(Tensor::ones(&dims, (kind, device))),
            _ => Err("has no value in the file, and the op needs it".into()),
        },
    }
}

fn node_error(cg: &Cg, n: NodeIndex, msg: String) -> Error {
    let node = &cg.graph[n];
    Error::Node {
        path: cg.source.clone(),
        index: n.index(),
        node: node.name.clone(),
        op: if node.onnx_op.is_empty() {
            node.kind.as_str().to_string()
        } else {
            node.onnx_op.clone()
        },
        msg: format!("cannot run: {msg}"),
    }
}

/// The batch size of a forward's inputs: the first input's leading dimension (1 for none).
fn leading_batch(inputs: &[Tensor]) -> i64 {
    inputs.first().map(|t| t.size().first().copied().unwrap_or(1)).unwrap_or(1)
}

/// Parameters of an executor as a map of name to values (for tests and debugging).
pub fn param_values(ex: &Executor) -> BTreeMap<String, Vec<f64>> {
    ex.params()
        .iter()
        .map(|p| {
            let t = p.tensor.detach().to_kind(Kind::Double).flatten(0, -1);
            let v: Vec<f64> = Vec::<f64>::try_from(&t).unwrap_or_default();
            (p.name.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside [`no_grad`], caught as a proxy's error is, leaves gradients on for what
    /// the thread runs next (`tch::no_grad` left them off).
    #[test]
    fn a_panic_without_gradients_leaves_them_on() {
        assert!(batchnorm::grad_mode());
        let caught = crate::error::catch_panic(|| no_grad(|| panic!("an allocation failed")));
        assert!(caught.is_err());
        assert!(batchnorm::grad_mode(), "gradients stayed off after the panic");
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = (&w * 2.0).sum(Kind::Float);
        assert!(y.requires_grad() && !no_grad(|| (&w * 2.0).requires_grad()));
    }
}
