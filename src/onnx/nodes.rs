//! The node stage of reading a model: walk the ONNX nodes in file order with tract's facts in
//! hand, fold what is computed from constants and weights only (keeping track of which weight
//! tensors each folded value comes from, so weight provenance survives Identity, Reshape,
//! weight standardisation and the like), alias pass-through ops, and add one CG node per
//! remaining op with its shapes, parameters (each source tensor once) and costs.

use super::analyse::{const_value, Facts};
use super::{attr_value, bounded, map, slots, tables, Static};
use super::{HashMap, HashSet};
use crate::error::{Error, Result};
use crate::graph::{Cg, OpKind, OpNode, Operand, Shape, TensorEdge};
use petgraph::stable_graph::NodeIndex;
use tract_onnx::pb;

/// Builds the CG node by node.
pub(super) struct Builder<'a> {
    source: &'a str,
    facts: &'a Facts,
    weight_inputs: &'a HashMap<&'a str, Vec<usize>>,
    strict: bool,
    pub(super) cg: Cg,
    statics: HashMap<String, Static>,
    /// Tensor name -> (producing CG node, output slot).
    producer: HashMap<String, (NodeIndex, usize)>,
    /// A pass-through op's output is its input.
    alias: HashMap<String, String>,
    /// Source tensors already counted as parameters.
    claimed: HashSet<String>,
    /// Constants the analysis left without a value, though the file determines them.
    pub(super) unfolded: Vec<String>,
    /// Relative-position tables stored gathered, counted as their tables.
    gathered: tables::Gathered,
    /// Identity copies of a weight (see [`Builder::fold_static`]) ...
    copies: HashSet<String>,
    /// ... and those counted as parameters: how many, how many values.
    copied: (usize, u64),
    /// Tensors whose size or value follows a data-dependent count, taken at its bound
    /// ([`super::bounded`]).
    bounded: HashSet<String>,
}

/// One ONNX node being read: its index, display name, and inputs after aliasing.
struct At<'p> {
    index: usize,
    name: String,
    pn: &'p pb::NodeProto,
    inputs: Vec<Option<String>>,
}

impl At<'_> {
    fn err(&self, source: &str, msg: String) -> Error {
        Error::Node {
            path: source.into(),
            index: self.index,
            node: self.name.clone(),
            op: self.pn.op_type.clone(),
            msg,
        }
    }
}

impl<'a> Builder<'a> {
    /// Seeds the statics with the initializers and weight inputs.
    pub(super) fn new(
        source: &'a str,
        facts: &'a Facts,
        graph: &pb::GraphProto,
        weight_inputs: &'a HashMap<&'a str, Vec<usize>>,
        strict: bool,
    ) -> Builder<'a> {
        let mut statics = HashMap::default();
        for t in &graph.initializer {
            let numel = t.dims.iter().map(|&d| d.max(0) as u64).product();
            let value = facts.table.get(&t.name).and_then(|f| f.value.clone());
            let float = super::is_float_type(t.data_type);
            let s = Static { float, numel, sources: vec![t.name.clone()], value, computable: true };
            statics.insert(t.name.clone(), s);
        }
        for (name, dims) in weight_inputs {
            let numel = dims.iter().map(|&d| d as u64).product();
            let sources = vec![name.to_string()];
            let s = Static { float: true, numel, sources, value: None, computable: false };
            statics.insert(name.to_string(), s);
        }
        Builder {
            source,
            facts,
            weight_inputs,
            strict,
            cg: Cg::new(source),
            statics,
            producer: HashMap::default(),
            alias: HashMap::default(),
            claimed: HashSet::default(),
            unfolded: Vec::new(),
            gathered: tables::Gathered::default(),
            copies: HashSet::default(),
            copied: (0, 0),
            bounded: HashSet::default(),
        }
    }

    fn shape_of(&self, name: &str) -> Option<Shape> {
        self.facts.table.get(name).and_then(|f| f.shape.clone())
    }

    fn resolve(&self, mut t: String) -> String {
        while let Some(a) = self.alias.get(&t) {
            t = a.clone();
        }
        t
    }

    /// An Input node per data input.
    pub(super) fn data_inputs(&mut self, data: &[&pb::ValueInfoProto]) -> Result<()> {
        for vi in data {
            let shape = self.shape_of(&vi.name).ok_or_else(|| Error::Shape {
                path: self.source.into(),
                msg: format!("input '{}' has no concrete shape", vi.name),
            })?;
            let mut node = OpNode::new(OpKind::Input, vi.name.clone());
            node.out_shapes = vec![shape];
            let n = self.cg.graph.add_node(node);
            self.producer.insert(vi.name.clone(), (n, 0));
        }
        Ok(())
    }

    /// Reads one ONNX node.
    pub(super) fn node(&mut self, index: usize, pn: &pb::NodeProto) -> Result<()> {
        let name = if !pn.name.is_empty() {
            pn.name.clone()
        } else {
            pn.output.first().cloned().unwrap_or_else(|| format!("{index}-{}", pn.op_type))
        };
        // a subgraph's reads of this graph's tensors are inputs too (after the listed ones)
        let inputs = pn
            .input
            .iter()
            .chain(&slots::outer_reads(pn))
            .map(|i| if i.is_empty() { None } else { Some(self.resolve(i.clone())) })
            .collect();
        let at = At { index, name, pn, inputs };
        let bounded = bounded::SOURCES.contains(&pn.op_type.as_str())
            || at.inputs.iter().flatten().any(|i| self.bounded.contains(i));
        if bounded {
            self.bounded.extend(pn.output.iter().filter(|o| !o.is_empty()).cloned());
        }
        let all_static = at.inputs.iter().flatten().all(|i| self.statics.contains_key(i));
        if pn.op_type == "Constant" || (all_static && pn.op_type != "RandomNormalLike") {
            self.fold_static(&at);
            return Ok(());
        }
        if pn.op_type == "Shape" || pn.op_type == "Size" {
            return self.shape_static(&at);
        }
        if slots::is_pass_through(&pn.op_type) || self.is_float_cast(&at) {
            if let (Some(Some(i)), Some(o)) = (at.inputs.first(), pn.output.first()) {
                self.alias.insert(o.clone(), i.clone());
                return Ok(());
            }
        }
        if self.strict && !map::is_known(&pn.op_type) {
            return Err(Error::Unsupported {
                path: self.source.into(),
                index,
                node: at.name,
                op: pn.op_type.clone(),
            });
        }
        self.compute(&at)
    }

    /// A `Cast` from one float type to another (float32, float16, double, bfloat16) changes the
    /// precision, not the network: it passes its input through like an `Identity` (a float16
    /// file converted with its inputs and outputs kept float32 casts them at both ends).
    fn is_float_cast(&self, at: &At) -> bool {
        let to = super::map::attr_int(at.pn, "to").and_then(|t| i32::try_from(t).ok());
        let input = at.inputs.first().and_then(|i| i.as_ref());
        let float_in = input
            .and_then(|i| self.facts.table.get(i))
            .and_then(|f| f.datum_type)
            .is_some_and(|d| d.is_float());
        at.pn.op_type == "Cast" && to.is_some_and(super::is_float_type) && float_in
    }

    /// A node computed from constants and weights only: its outputs are statics. They carry the
    /// weight tensors whose values flow into them (through layout ops, casts, arithmetic such
    /// as weight standardisation), so a weight is counted where it is finally used. An
    /// `Identity` of a weight makes a new weight: exporters write one tensor and Identity
    /// copies for framework parameters that happen to hold identical values.
    fn fold_static(&mut self, at: &At) {
        let op = at.pn.op_type.as_str();
        let mut sources: Vec<String> = at
            .inputs
            .iter()
            .enumerate()
            .filter(|(slot, _)| slots::carries_value(op, *slot))
            .filter_map(|(_, i)| i.as_ref().and_then(|i| self.statics.get(i)))
            .filter(|s| s.float)
            .flat_map(|s| s.sources.clone())
            .collect();
        sources.sort();
        sources.dedup();
        let input = at.inputs.first().and_then(|i| i.as_ref());
        let identity_of_source = op == "Identity" && input.is_some_and(|i| sources == [i.clone()]);
        // equal varied values are one parameter used in several places (independently
        // initialised parameters never hold them); equal constant values (zeros, ones) or
        // values the file does not hold are parameters that only share their initial values
        let shared = identity_of_source
            && input
                .and_then(|i| self.statics.get(i))
                .and_then(|s| s.value.as_ref())
                .is_some_and(|v| varied(v));
        let copy_of_source = identity_of_source && !shared;
        let computable =
            at.inputs.iter().flatten().all(|i| self.statics.get(i).is_some_and(|s| s.computable));
        for o in at.pn.output.iter().filter(|o| !o.is_empty()) {
            let f = self.facts.table.get(o);
            let float = f.and_then(|f| f.datum_type).map(|d| d.is_float()).unwrap_or(false);
            let numel =
                self.shape_of(o).map(|s| s.iter().map(|&d| d as u64).product()).unwrap_or(0);
            let sources = if copy_of_source {
                self.copies.insert(o.clone());
                vec![o.clone()]
            } else {
                sources.clone()
            };
            let value = f.and_then(|f| f.value.clone());
            self.statics.insert(o.clone(), Static { float, numel, sources, value, computable });
        }
    }

    /// Shape / Size of an activation: known once the input shapes are bound.
    fn shape_static(&mut self, at: &At) -> Result<()> {
        for o in at.pn.output.iter().filter(|o| !o.is_empty()) {
            let value = self.facts.table.get(o).and_then(|f| f.value.clone());
            if value.is_none() {
                let why = self.facts.why();
                return Err(
                    at.err(self.source, format!("the shape this node reads is not known{why}"))
                );
            }
            let s = Static { float: false, numel: 0, sources: vec![], value, computable: true };
            self.statics.insert(o.clone(), s);
        }
        Ok(())
    }

    /// A compute node: activation inputs become edges, statics become operands.
    fn compute(&mut self, at: &At) -> Result<()> {
        let pn = at.pn;
        let (act_inputs, static_slots) = self.sort_inputs(at)?;
        let in_shapes: Vec<Shape> = act_inputs
            .iter()
            .map(|(_, i)| {
                self.shape_of(i)
                    .ok_or_else(|| at.err(self.source, format!("shape of input '{i}' is unknown")))
            })
            .collect::<Result<_>>()?;
        let outputs: Vec<&String> = pn.output.iter().filter(|o| !o.is_empty()).collect();
        let out_shapes = self.out_shapes(at, &outputs)?;
        let statics: Vec<(usize, &Static)> = static_slots
            .iter()
            .filter_map(|&slot| {
                at.inputs[slot].as_ref().and_then(|i| self.statics.get(i)).map(|s| (slot, s))
            })
            .collect();
        let ctx = map::NodeCtx {
            pn,
            in_shapes: &in_shapes,
            out_shapes: &out_shapes,
            statics: &statics,
            act_slots: act_inputs.iter().map(|(s, _)| *s).collect(),
        };
        let mapped = map::map_node(&ctx).map_err(|m| at.err(self.source, m))?;
        if mapped.kind.is_unknown() {
            tracing::warn!(
                "{}: node {} '{}': op {} is not in nape's vocabulary; kept as Unknown",
                self.source,
                at.index,
                at.name,
                pn.op_type
            );
        }
        let operands = self.operands(at, &static_slots)?;
        let params = self.claim_params(at, &static_slots);
        let mut node = OpNode::new(mapped.kind, at.name.clone());
        node.act_slots = act_inputs.iter().map(|(s, _)| *s).collect();
        node.operands = operands;
        node.onnx_attrs = pn.attribute.iter().filter_map(attr_value).collect();
        node.onnx_op = pn.op_type.clone();
        node.attrs = mapped.attrs;
        node.in_shapes = in_shapes.clone();
        node.out_shapes = out_shapes;
        node.params = params;
        node.macs = mapped.macs;
        node.flops = mapped.flops;
        node.bounded = pn.output.iter().any(|o| self.bounded.contains(o));
        let n = self.cg.graph.add_node(node);
        self.connect(n, &act_inputs, &in_shapes, &outputs);
        Ok(())
    }

    /// A node's inputs by slot: the activations (slot, name), produced by an earlier node, and
    /// the slots of static ones (weights, constants); an input neither is an error.
    #[allow(clippy::type_complexity)]
    fn sort_inputs(&self, at: &At) -> Result<(Vec<(usize, String)>, Vec<usize>)> {
        let mut act_inputs: Vec<(usize, String)> = Vec::new();
        let mut static_slots: Vec<usize> = Vec::new();
        for (slot, i) in at.inputs.iter().enumerate() {
            let Some(i) = i else { continue };
            if self.statics.contains_key(i) {
                static_slots.push(slot);
            } else if self.producer.contains_key(i) {
                act_inputs.push((slot, i.clone()));
            } else {
                return Err(
                    at.err(self.source, format!("input '{i}' is not produced by any earlier node"))
                );
            }
        }
        Ok((act_inputs, static_slots))
    }

    /// Node `n`'s edges from the producers of its activation inputs, and `n` as the producer
    /// of its outputs.
    fn connect(
        &mut self,
        n: NodeIndex,
        act_inputs: &[(usize, String)],
        in_shapes: &[Shape],
        outputs: &[&String],
    ) {
        for (dst_slot, (_, i)) in act_inputs.iter().enumerate() {
            let (src, src_slot) = self.producer[i];
            let shape = in_shapes[dst_slot].clone();
            self.cg.graph.add_edge(
                src,
                n,
                TensorEdge { src_slot, dst_slot, shape, name: i.clone() },
            );
        }
        for (slot, o) in outputs.iter().enumerate() {
            self.producer.insert((*o).clone(), (n, slot));
        }
    }

    fn out_shapes(&self, at: &At, outputs: &[&String]) -> Result<Vec<Shape>> {
        outputs
            .iter()
            .map(|o| {
                self.shape_of(o).ok_or_else(|| {
                    let op = &at.pn.op_type;
                    at.err(
                        self.source,
                        if op == "If" {
                            "its condition depends on the input's values, so nape cannot tell which branch runs".into()
                        } else if !map::is_known(op) {
                            format!("op {op} is not supported by the shape analysis, so its output shape is unknown")
                        } else {
                            format!("could not infer the shape of output '{o}'{}", self.facts.why())
                        },
                    )
                })
            })
            .collect()
    }

    /// Parameters of a compute node: the float sources behind its static operands at parameter
    /// slots, each source tensor counted once in the whole graph.
    fn claim_params(&mut self, at: &At, static_slots: &[usize]) -> u64 {
        let mut params = 0u64;
        for &slot in static_slots {
            let Some(s) = at.inputs[slot].as_ref().and_then(|i| self.statics.get(i)) else {
                continue;
            };
            if !s.float || s.numel <= 1 || !slots::is_param_slot(&at.pn.op_type, slot) {
                continue;
            }
            if let Some(table) = self.gathered_table(at, slot) {
                if self.claimed.insert(s.sources[0].clone()) {
                    self.gathered.tensors += 1;
                    self.gathered.in_file += s.numel;
                    self.gathered.counted += table;
                    params += table;
                }
                continue;
            }
            for src in &s.sources {
                let counted = |o: &&Static| o.float && o.numel > 1 && !is_mask(o);
                let Some(origin) = self.statics.get(src).filter(counted) else { continue };
                // a tensor of constant values (zeros, ones) read again by another node is a
                // parameter of its own that shares its initial values (ONNX Runtime's optimiser
                // merges such initializers), as for Identity copies; varied values, or values
                // the file does not hold, are one parameter used again
                let first = self.claimed.insert(src.clone());
                let again = !first && origin.value.as_ref().is_some_and(|v| !varied(v));
                if first || again {
                    params += origin.numel;
                }
                if (first && self.copies.contains(src)) || again {
                    self.copied.0 += 1;
                    self.copied.1 += origin.numel;
                }
            }
        }
        params
    }

    /// The table size a static operand of an `Add` stands for, when it is a relative-position
    /// bias the exporter gathered ([`tables`]): one source tensor of that shape, added to
    /// attention scores (a product of two activations of the same `[.., N, N]`).
    fn gathered_table(&self, at: &At, slot: usize) -> Option<u64> {
        if at.pn.op_type != "Add" {
            return None;
        }
        let name = at.inputs[slot].as_ref()?;
        let s = self.statics.get(name)?;
        let shape = self.shape_of(name)?;
        let origin = self.statics.get(s.sources.first()?)?;
        // a causal mask of a square length (16 tokens) has the shape too, but no table holds
        // a mask's fill values
        if s.sources.len() != 1 || origin.numel != s.numel || is_mask(origin) {
            return None;
        }
        let scores = at.inputs.iter().flatten().find(|i| self.producer.contains_key(*i))?;
        let (node, _) = self.producer[scores];
        let tail = |s: &[usize]| s[s.len().saturating_sub(2)..].to_vec();
        let same_tail = self.shape_of(scores).is_some_and(|a| tail(&a) == tail(&shape));
        let from_scores = self.cg.graph[node].kind == OpKind::MatMul && same_tail;
        from_scores.then(|| tables::table_size(&shape)).flatten()
    }

    fn operands(&mut self, at: &At, static_slots: &[usize]) -> Result<Vec<Operand>> {
        let mut operands = Vec::with_capacity(static_slots.len());
        for &slot in static_slots {
            let name = at.inputs[slot].clone().unwrap_or_default();
            let Some(s) = self.statics.get(&name) else { continue };
            // a bounded constant's value is never needed: the executor refuses bounded graphs
            let bounded = self.bounded.contains(&name);
            if s.value.is_none() && s.computable && !bounded && !self.unfolded.contains(&name) {
                self.unfolded.push(name.clone());
            }
            let shape = self
                .weight_inputs
                .get(name.as_str())
                .cloned()
                .or_else(|| self.shape_of(&name))
                .unwrap_or_default();
            operands.push(Operand {
                slot,
                param: s.float
                    && s.numel > 1
                    && !s.sources.is_empty()
                    && !is_mask(s)
                    && slots::is_param_slot(&at.pn.op_type, slot),
                value: match s.value.as_deref().map(const_value).transpose() {
                    Ok(v) => v.flatten(),
                    Err(msg) => return Err(at.err(self.source, msg)),
                },
                name,
                shape,
            });
        }
        Ok(operands)
    }

    /// Values of the Identity copies counted as parameters of their own, which the file does
    /// not tell from one parameter used again (see [`Self::notes`]).
    pub(super) fn undecided_params(&self) -> u64 {
        self.copied.1
    }

    /// What the count had to take on trust: gathered tables, Identity copies of a weight.
    pub(super) fn notes(&self) -> Vec<String> {
        let copied = (self.copied.0 > 0).then(|| {
            format!(
                "{} weights ({} values) are Identity copies of another weight, or one weight read by several nodes, whose values the file does not hold or are all equal: exporters and optimisers write one tensor for parameters of identical values, so they are counted as distinct parameters; a network that uses one parameter in several places (weight sharing) is overcounted by them",
                self.copied.0, self.copied.1
            )
        });
        [self.gathered.note(), copied].into_iter().flatten().collect()
    }

    /// An Output node per graph output.
    pub(super) fn outputs(&mut self, graph: &pb::GraphProto) -> Result<()> {
        for vo in &graph.output {
            let t = self.resolve(vo.name.clone());
            let Some(&(src, src_slot)) = self.producer.get(&t) else {
                if self.statics.contains_key(&t) {
                    tracing::warn!(
                        "{}: output '{}' is a constant; it has no node in the graph",
                        self.source,
                        vo.name
                    );
                    continue;
                }
                return Err(Error::InvalidOnnx {
                    path: self.source.into(),
                    msg: format!("output '{}' is not produced by any node", vo.name),
                });
            };
            let shape = self.cg.graph[src].out_shapes.get(src_slot).cloned().unwrap_or_default();
            let mut node = OpNode::new(OpKind::Output, vo.name.clone());
            node.in_shapes = vec![shape.clone()];
            let n = self.cg.graph.add_node(node);
            self.cg.graph.add_edge(src, n, TensorEdge { src_slot, dst_slot: 0, shape, name: t });
        }
        Ok(())
    }
}

/// Whether a constant holds a mask's fill values: an infinity, a NaN, or an extreme of its
/// float type (`finfo.min`, which Hugging Face fills masks with: -3.4e38, or -65504 in float16). No trained parameter reaches them, so a
/// constant causal mask added to attention scores is no parameter. Only tensors of at most
/// [`super::slim::KEEP_REREAD`] values are looked at: the shapes-only reading keeps no larger
/// one's data, so both readings decide alike, and no weight of a large network is scanned.
fn is_mask(s: &Static) -> bool {
    if s.numel > super::slim::KEEP_REREAD {
        return false;
    }
    let Some(t) = s.value.as_ref() else { return false };
    // a float16 file fills its masks with float16's extreme (-65504)
    let extreme = match t.datum_type() {
        tract_onnx::prelude::DatumType::F16 => tract_onnx::prelude::f16::MAX.to_f32(),
        _ => f32::MAX,
    };
    let Ok(c) = t.cast_to::<f32>() else { return false };
    let Ok(v) = c.to_plain_array_view::<f32>() else { return false };
    v.iter().any(|x| !x.is_finite() || x.abs() >= extreme / 2.0)
}

/// Whether a tensor holds more than one distinct value.
fn varied(t: &tract_onnx::prelude::Tensor) -> bool {
    let Ok(c) = t.cast_to::<f32>() else { return false };
    let Ok(v) = c.to_plain_array_view::<f32>() else { return false };
    let mut it = v.iter();
    it.next().is_some_and(|&first| it.any(|&x| x.to_bits() != first.to_bits()))
}
