//! Shape rules for ops whose output size depends on the input's values (detection heads:
//! `NonZero`, `NonMaxSuppression`), registered on the parser nape's analysis uses. Each
//! takes its **upper bound** as its shape: every element selected, every box kept. Downstream
//! shapes, MACs and FLOPs are then upper bounds too, and the loader marks those nodes
//! ([`crate::graph::OpNode::bounded`]). `RoiAlign` has a static rule (one pooled map per
//! region), and `If` is left for the loader to decide ([`inline_decided_ifs`]).
//! tract cannot run these versions: typing one is an error naming it.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{self, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// ONNX op types whose output size follows the input's values: the sources of bounds.
/// A `Loop` is one too: its condition can end it before its trip count.
pub(super) const SOURCES: &[&str] = &["NonZero", "NonMaxSuppression", "Loop"];

pub(super) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("NonZero", |_: &ParsingContext, _: &NodeProto| Ok((expand(NonZero), vec![])));
    reg.insert("NonMaxSuppression", |_: &ParsingContext, _: &NodeProto| Ok((expand(Nms), vec![])));
    reg.insert("RoiAlign", |_: &ParsingContext, node: &NodeProto| {
        let side = |name| node.get_attr_opt::<i64>(name).map(|v| v.unwrap_or(1));
        Ok((
            expand(RoiAlign { height: side("output_height")?, width: side("output_width")? }),
            vec![],
        ))
    });
    reg.insert("Loop", super::tract_loop::parse);
    reg.insert("If", |_: &ParsingContext, node: &NodeProto| {
        Ok((expand(Undecided { outputs: node.output.len() }), vec![]))
    });
}

/// The rest of an expansion that only gives shapes: tract neither evaluates it during the
/// analysis nor runs it (typing it is an error naming it).
macro_rules! shapes_only {
    ($op:literal) => {
        fn runs_out_of_plan(&self) -> bool {
            false
        }

        fn wire(
            &self,
            prefix: &str,
            _: &mut TypedModel,
            _: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            bail!("{prefix}: tract cannot run nape's {} (its size depends on the values)", $op)
        }
    };
}

/// `NonZero`: the indices [rank, count] of the non-zero elements; bound: every element.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct NonZero;

impl Expansion for NonZero {
    fn name(&self) -> StaticName {
        "NonZero".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i64::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], inputs[0].rank.bex().to_dim())?;
        s.given(&inputs[0].shape, move |s, shape| {
            let count: TDim = shape.iter().product();
            s.equals(&outputs[0].shape[1], count)
        })
    }

    shapes_only!("NonZero");
}

/// `NonMaxSuppression`: [selected, 3] indices; bound: every box of every class and batch,
/// or `max_output_boxes_per_class` of each when that is smaller.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Nms;

impl Expansion for Nms {
    fn name(&self) -> StaticName {
        "NonMaxSuppression".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        if inputs.len() < 2 {
            bail!("NonMaxSuppression needs boxes and scores");
        }
        s.equals(&outputs[0].datum_type, i64::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[1], 3.to_dim())?;
        let selected = |scores: &[TDim], cap: Option<i64>| -> TractResult<TDim> {
            let [b, c, n] = scores else {
                bail!("NonMaxSuppression: scores of rank {}", scores.len())
            };
            let per_class = match (n.to_i64(), cap) {
                (Ok(n), Some(cap)) => TDim::from(n.min(cap.max(0))),
                _ => n.clone(),
            };
            Ok(b.clone() * c.clone() * per_class)
        };
        if inputs.len() > 2 {
            s.given_2(&inputs[1].shape, &inputs[2].value, move |s, scores, cap| {
                let cap = cap.cast_to_scalar::<i64>()?;
                s.equals(&outputs[0].shape[0], selected(&scores, Some(cap))?)
            })
        } else {
            s.given(&inputs[1].shape, move |s, scores| {
                s.equals(&outputs[0].shape[0], selected(&scores, None)?)
            })
        }
    }

    shapes_only!("NonMaxSuppression");
}

/// `RoiAlign`: one [C, height, width] map pooled from the features per region of interest.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RoiAlign {
    height: i64,
    width: i64,
}

impl Expansion for RoiAlign {
    fn name(&self) -> StaticName {
        "RoiAlign".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        s.equals(&outputs[0].shape[0], &inputs[1].shape[0])?;
        s.equals(&outputs[0].shape[1], &inputs[0].shape[1])?;
        s.equals(&outputs[0].shape[2], self.height.to_dim())?;
        s.equals(&outputs[0].shape[3], self.width.to_dim())
    }

    shapes_only!("RoiAlign");
}

/// `If`, before the loader has decided it: no rule, so its outputs stay unknown until its
/// condition is known and the branch taken replaces it.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Undecided {
    outputs: usize,
}

impl Expansion for Undecided {
    fn name(&self) -> StaticName {
        "If".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.outputs)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        _: &mut Solver<'r>,
        _: &'p [TensorProxy],
        _: &'p [TensorProxy],
    ) -> InferenceResult {
        Ok(())
    }

    shapes_only!("If");
}

/// Replaces every `If` whose condition `value_of` knows by the nodes of the branch it takes
/// (its initializers join the graph's; its results are renamed to the `If`'s outputs by
/// `Identity` nodes). Returns how many were replaced.
pub(super) fn inline_decided_ifs(
    graph: &mut pb::GraphProto,
    value_of: &dyn Fn(&str) -> Option<bool>,
) -> usize {
    let mut replaced = 0;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for n in std::mem::take(&mut graph.node) {
        let decided =
            (n.op_type == "If").then(|| n.input.first().and_then(|c| value_of(c))).flatten();
        let Some(cond) = decided else {
            nodes.push(n);
            continue;
        };
        let which = if cond { "then_branch" } else { "else_branch" };
        let Some(branch) = n.attribute.iter().find(|a| a.name == which).and_then(|a| a.g.clone())
        else {
            nodes.push(n);
            continue;
        };
        graph.initializer.extend(branch.initializer);
        nodes.extend(branch.node);
        for (inner, outer) in branch.output.iter().zip(&n.output) {
            nodes.push(pb::NodeProto {
                op_type: "Identity".into(),
                name: format!("{}/{which}/{}", n.name, outer),
                input: vec![inner.name.clone()],
                output: vec![outer.clone()],
                ..Default::default()
            });
        }
        replaced += 1;
    }
    graph.node = nodes;
    replaced
}

/// The model with every `If` that the shapes decide replaced by the branch it takes, branch
/// after branch (a decided branch can decide the next `If`); `None` when it has no `If`.
pub(super) fn decide_ifs(
    model: &pb::ModelProto,
    source: &str,
    opts: &super::ImportOptions,
) -> crate::error::Result<Option<pb::ModelProto>> {
    let has_if = |g: &pb::GraphProto| g.node.iter().any(|n| n.op_type == "If");
    if !model.graph.as_ref().is_some_and(has_if) {
        return Ok(None);
    }
    let mut model = model.clone();
    while let Some(graph) = model.graph.as_ref().filter(|g| has_if(g)) {
        let inputs = super::inputs::classify(&model, graph, source)?;
        let bind = |name: &str| {
            super::bind::bind_input(name, graph, &inputs.data, &inputs.weights, opts, source)
        };
        let facts = super::analyse::analyse_twice(&model, &bind, source)?;
        // the conditions the analysis knows, then the graph they came from is changed in place
        let known: super::HashMap<String, bool> = graph
            .node
            .iter()
            .filter(|n| n.op_type == "If")
            .filter_map(|n| n.input.first())
            .filter_map(|c| {
                let v = facts.table.get(c)?.value.as_ref()?.cast_to_scalar::<bool>().ok()?;
                Some((c.clone(), v))
            })
            .collect();
        let Some(graph) = model.graph.as_mut().filter(|_| !known.is_empty()) else { break };
        if inline_decided_ifs(graph, &|c| known.get(c).copied()) == 0 {
            break; // a known condition without the branch it names: the If stays, and is refused
        }
    }
    Ok(Some(model))
}

/// The note of a graph with bounded nodes: how many, and how much of its MACs they hold.
pub(super) fn note(cg: &crate::graph::Cg) -> Option<String> {
    let bounded: Vec<_> = cg.graph.node_weights().filter(|n| n.bounded).collect();
    let first = bounded.iter().find(|n| SOURCES.contains(&n.onnx_op.as_str()))?;
    let macs: u64 = bounded.iter().map(|n| n.macs).sum();
    Some(format!(
        "{} nodes follow counts that depend on the input's values (from '{}' ({}) on), taken at their upper bound (every element selected, every box kept): their shapes, {macs} of the MACs and their FLOPs are upper bounds",
        bounded.len(),
        first.name,
        first.onnx_op
    ))
}

#[cfg(test)]
mod tests {
    use crate::onnx::{load_bytes, write, ImportOptions};
    use prost::Message;
    use tract_onnx::pb;

    fn node(
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    fn graph_attr(name: &str, nodes: Vec<pb::NodeProto>, output: &str) -> pb::AttributeProto {
        let g = pb::GraphProto {
            node: nodes,
            output: vec![pb::ValueInfoProto { name: output.into(), ..Default::default() }],
            ..Default::default()
        };
        pb::AttributeProto { name: name.into(), r#type: 5, g: Some(g), ..Default::default() }
    }

    fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
        pb::AttributeProto { name: name.into(), r#type: 2, i, ..Default::default() }
    }

    fn tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: raw,
            ..Default::default()
        }
    }

    /// A model of input `x` [1, 6], the nodes, the initializers and output `y`, read.
    fn read(
        nodes: Vec<pb::NodeProto>,
        initializer: Vec<pb::TensorProto>,
    ) -> crate::Result<crate::graph::Cg> {
        let graph = pb::GraphProto {
            node: nodes,
            initializer,
            input: vec![write::value_info("x", &[1, 6])],
            output: vec![write::value_info("y", &[])],
            ..Default::default()
        };
        let opset = vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }];
        let model = pb::ModelProto {
            ir_version: 8,
            graph: Some(graph),
            opset_import: opset,
            ..Default::default()
        };
        load_bytes(&model.encode_to_vec(), "t.onnx", &ImportOptions::default())
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    #[test]
    fn nonzero_takes_every_element_and_marks_what_follows_as_a_bound() {
        let nodes = vec![
            node("Greater", &["x", "zero"], "mask", vec![]),
            node("NonZero", &["mask"], "idx", vec![]),
            node("Cast", &["idx"], "f", vec![int_attr("to", 1)]),
            node("MatMul", &["f", "W"], "y", vec![]),
        ];
        let w: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let inits =
            vec![tensor("zero", 1, &[], floats(&[0.0])), tensor("W", 1, &[6, 4], floats(&w))];
        let cg = read(nodes, inits).expect("reads");
        let by_name = |n: &str| cg.graph.node_weights().find(|o| o.name == n).expect(n).clone();
        assert_eq!(by_name("idx").out_shapes, vec![vec![2, 6]]);
        assert!(!by_name("mask").bounded && by_name("idx").bounded && by_name("f").bounded);
        let s = cg.summary();
        assert_eq!((s.macs, s.bounded_macs, s.params), (48, 48, 24));
        assert_eq!(cg.notes.len(), 1, "{:?}", cg.notes);
        assert!(
            cg.notes[0].starts_with(
                "3 nodes follow counts that depend on the input's values (from 'idx' (NonZero)"
            ),
            "{:?}",
            cg.notes
        );
    }

    /// `If(cond) then Identity(x) else Relu(x)`, `cond` made by `cond_nodes` from `x`.
    fn if_model(
        cond_nodes: Vec<pb::NodeProto>,
        inits: Vec<pb::TensorProto>,
    ) -> crate::Result<crate::graph::Cg> {
        let then_b = graph_attr("then_branch", vec![node("Identity", &["x"], "t", vec![])], "t");
        let else_b = graph_attr("else_branch", vec![node("Relu", &["x"], "e", vec![])], "e");
        let mut nodes = cond_nodes;
        nodes.push(node("If", &["cond"], "y", vec![then_b, else_b]));
        read(nodes, inits)
    }

    #[test]
    fn an_if_the_shapes_decide_becomes_the_branch_it_takes() {
        // cond = (number of elements of x == 0): false, so the else branch (Relu) runs
        let cond =
            vec![node("Size", &["x"], "n", vec![]), node("Equal", &["n", "zero"], "cond", vec![])];
        let cg = if_model(cond, vec![tensor("zero", 7, &[], 0i64.to_le_bytes().to_vec())])
            .expect("reads");
        let kinds: Vec<String> = cg.graph.node_weights().map(|n| n.kind.to_string()).collect();
        assert_eq!(kinds, ["Input", "Relu", "Output"]);
        assert!(cg.notes.is_empty(), "{:?}", cg.notes);
    }

    #[test]
    fn an_if_on_the_inputs_values_is_an_error_naming_it() {
        let cond = vec![
            node("ReduceMax", &["x"], "m", vec![int_attr("keepdims", 0)]),
            node("Greater", &["m", "zero"], "cond", vec![]),
        ];
        let e =
            if_model(cond, vec![tensor("zero", 1, &[], floats(&[0.0]))]).expect_err("undecidable");
        let msg = e.to_string();
        assert!(
            msg.contains("'y' (If)") && msg.contains("its condition depends on the input's values"),
            "{msg}"
        );
    }

    /// A typed value of no declared shape (a loop body's input or output).
    fn typed(name: &str, elem_type: i32) -> pb::ValueInfoProto {
        let mut vi = write::value_info(name, &[]);
        if let Some(pb::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.elem_type = elem_type;
            t.shape = None;
        }
        vi
    }

    /// `Loop(trips = 3, cond = true, v0)` whose body makes `v_out` from `v_in` (and x) by `ops`.
    fn loop_model(ops: Vec<pb::NodeProto>, v0: &[i64]) -> crate::Result<crate::graph::Cg> {
        let mut nodes = vec![node("Identity", &["c_in"], "c_out", vec![])];
        nodes.extend(ops);
        let body = pb::GraphProto {
            node: nodes,
            input: vec![typed("i", 7), typed("c_in", 9), typed("v_in", 1)],
            output: vec![typed("c_out", 9), typed("v_out", 1)],
            ..Default::default()
        };
        let body = pb::AttributeProto {
            name: "body".into(),
            r#type: 5,
            g: Some(body),
            ..Default::default()
        };
        let zeros = vec![0.0; v0.iter().product::<i64>() as usize];
        let inits = vec![
            tensor("trips", 7, &[], 3i64.to_le_bytes().to_vec()),
            tensor("go", 9, &[], vec![1]),
            tensor("v0", 1, v0, floats(&zeros)),
        ];
        read(vec![node("Loop", &["trips", "go", "v0"], "y", vec![body])], inits)
    }

    #[test]
    fn a_loop_reads_the_activations_its_body_reads_and_keeps_or_grows_its_carried_shapes() {
        // every listed input is a constant; the body reads x [1, 6] from the enclosing graph
        for (op, v0, want) in [("Add", [1, 6], [1, 6]), ("Concat", [0, 6], [3, 6])] {
            let step = node(op, &["v_in", "x"], "v_out", vec![int_attr("axis", 0)]);
            let cg = loop_model(vec![step], &v0).expect("reads");
            let l = cg.graph.node_indices().find(|&n| cg.graph[n].kind.as_str() == "Loop");
            let l = l.expect("a Loop node");
            assert_eq!(cg.graph[l].out_shapes, vec![want.to_vec()], "{op}");
            assert!(cg.graph[l].bounded);
            let from: Vec<_> =
                cg.graph.neighbors_directed(l, petgraph::Direction::Incoming).collect();
            assert_eq!(from.len(), 1);
            assert_eq!(cg.graph[from[0]].name, "x");
        }
    }

    #[test]
    fn a_loop_with_matrix_work_in_its_body_is_refused() {
        let ops = vec![
            node("MatMul", &["v_in", "v_in"], "m", vec![]),
            node("Add", &["m", "x"], "v_out", vec![]),
        ];
        let e = loop_model(ops, &[6, 6]).expect_err("refused");
        assert!(e.to_string().contains("its body has MatMul work"), "{e}");
    }
}
