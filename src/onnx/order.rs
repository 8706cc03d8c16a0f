//! Node order: the ONNX standard wants a graph's nodes in topological order, and some tools
//! write them otherwise (onnxconverter-common's float16 conversion with `keep_io_types`
//! appends the `Cast`s of the graph inputs after the nodes that read them). ONNX Runtime runs
//! such files; nape reads them in dependency order, keeping the file's order where it can.

use super::HashSet;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tract_onnx::pb;

/// Puts the graph's nodes in dependency order (stable: a node comes as early in the file's order
/// as its inputs allow), with a note, when the file's order is not one. A graph with a cycle is
/// left as it is, for the reader to refuse.
pub(super) fn dependency_order(model: &mut pb::ModelProto) {
    let Some(graph) = model.graph.as_mut() else { return };
    let produced: HashSet<&str> =
        graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
    let mut seen: HashSet<&str> = HashSet::default();
    let in_order = graph.node.iter().all(|n| {
        let ok =
            n.input.iter().all(|i| !produced.contains(i.as_str()) || seen.contains(i.as_str()));
        seen.extend(n.output.iter().map(String::as_str));
        ok
    });
    if in_order {
        return;
    }
    let Some(order) = topological(&graph.node) else { return };
    let mut nodes: Vec<Option<pb::NodeProto>> =
        std::mem::take(&mut graph.node).into_iter().map(Some).collect();
    graph.node = order.into_iter().filter_map(|i| nodes[i].take()).collect();
    super::add_read_note(
        model,
        "the file's nodes are not in topological order (the ONNX checker refuses it): read in dependency order".into(),
    );
}

/// Kahn's algorithm, the lowest file index first among the ready nodes; `None` on a cycle.
fn topological(nodes: &[pb::NodeProto]) -> Option<Vec<usize>> {
    let mut producer = super::HashMap::default();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    let mut waiting = vec![0usize; nodes.len()];
    let mut consumers = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let deps: HashSet<usize> =
            n.input.iter().filter_map(|x| producer.get(x.as_str()).copied()).collect();
        waiting[i] = deps.len();
        for d in deps {
            consumers[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..nodes.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &c in &consumers[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    (order.len() == nodes.len()).then_some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(input: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: "Relu".into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn order_of(nodes: Vec<pb::NodeProto>) -> (Vec<String>, usize) {
        let graph = pb::GraphProto { node: nodes, ..Default::default() };
        let mut model = pb::ModelProto { graph: Some(graph), ..Default::default() };
        dependency_order(&mut model);
        let outs = model.graph.unwrap().node.iter().map(|n| n.output[0].clone()).collect();
        (outs, model.metadata_props.len())
    }

    #[test]
    fn a_cast_written_after_its_readers_moves_before_them_and_the_rest_keeps_its_order() {
        // x -> cast (written last) -> a -> b; c reads x directly
        let nodes =
            vec![node(&["cast"], "a"), node(&["x"], "c"), node(&["a"], "b"), node(&["x"], "cast")];
        assert_eq!(order_of(nodes), (vec!["c".into(), "cast".into(), "a".into(), "b".into()], 1));
    }

    #[test]
    fn an_ordered_graph_is_left_alone_and_a_cycle_is_left_for_the_reader() {
        let nodes = vec![node(&["x"], "a"), node(&["a"], "b")];
        assert_eq!(order_of(nodes), (vec!["a".into(), "b".into()], 0));
        let cycle = vec![node(&["b"], "a"), node(&["a"], "b")];
        assert_eq!(order_of(cycle), (vec!["a".into(), "b".into()], 0));
    }
}
