//! LayerNorm written out, as PyTorch exports `nn.LayerNorm` below opset 17 (where ONNX has no
//! `LayerNormalization`): `ReduceMean`, `Sub`, `Pow` by 2, `ReduceMean`, `Add` of epsilon,
//! `Sqrt`, `Div`, then `Mul` by the scale and `Add` of the bias. Read as the one
//! `LayerNormalization` it is, before tract reads the file (as fused activations are read as
//! one op), so a transformer exported at opset 14 reads as the same graph, with the same counts,
//! as at opset 17.
//!
//! tf2onnx writes Keras' `LayerNormalization` otherwise, as TensorFlow computes it: the mean
//! (`GlobalAveragePool`, or `ReduceMean` over the last axes), `Sub`, `Mul` by itself, the mean
//! of that, `Add` of epsilon, `Sqrt`, `Reciprocal`, `Mul` by the scale, then `x * scale +
//! (bias - mean * scale)` through `Neg`, two `Mul`s and one or two `Add`s. Read as one
//! `LayerNormalization` too ([`found_tf_at`]).

use super::HashMap;
use tract_onnx::pb;

/// The nodes of the file, and what is known of each name: who reads it, the tensors of the
/// constants (decoded when a pattern asks for a value), the graph inputs and `Identity` copies.
struct Index<'a> {
    nodes: &'a [pb::NodeProto],
    readers: HashMap<&'a str, Vec<usize>>,
    consts: HashMap<&'a str, &'a pb::TensorProto>,
    inits: HashMap<&'a str, &'a pb::TensorProto>,
    /// Graph inputs (weights held as inputs among them), and `Identity` copies: name -> source.
    inputs: super::HashSet<&'a str>,
    copies: HashMap<&'a str, &'a str>,
}

impl<'a> Index<'a> {
    fn of(graph: &'a pb::GraphProto) -> Index<'a> {
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::default();
        let mut consts = HashMap::default();
        let mut copies = HashMap::default();
        for (i, n) in graph.node.iter().enumerate() {
            if let (true, [x], [y]) = (n.op_type == "Identity", &n.input[..], &n.output[..]) {
                copies.insert(y.as_str(), x.as_str());
            }
            for x in &n.input {
                readers.entry(x.as_str()).or_default().push(i);
            }
            let value = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
            if let (true, Some(t), Some(o)) = (n.op_type == "Constant", value, n.output.first()) {
                consts.insert(o.as_str(), t);
            }
        }
        let inits: HashMap<&str, &pb::TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let inputs = graph.input.iter().map(|v| v.name.as_str()).collect();
        Index { nodes: &graph.node, readers, consts, inits, inputs, copies }
    }

    /// Whether `name` holds weights: an initializer, a `Constant`, a graph input, or an
    /// `Identity` copy of one (exporters write one tensor for parameters of equal values).
    fn is_weight(&self, name: &str) -> bool {
        let mut name = name;
        for _ in 0..8 {
            if self.inits.contains_key(name)
                || self.consts.contains_key(name)
                || self.inputs.contains(name)
            {
                return true;
            }
            match self.copies.get(name) {
                Some(src) => name = src,
                None => return false,
            }
        }
        false
    }

    /// The only node that reads `name`, if it is of `op`.
    fn only_reader(&self, name: &str, op: &str) -> Option<usize> {
        match self.readers.get(name).map(Vec::as_slice) {
            Some(&[i]) if self.nodes[i].op_type == op => Some(i),
            _ => None,
        }
    }

    /// The value of a constant name (a `Constant`'s output or a small initializer), as f64s.
    fn values(&self, name: &str) -> Option<Vec<f64>> {
        let proto = self.consts.get(name).or_else(|| self.inits.get(name))?;
        let t = super::shapes::initializer(proto)?;
        let t = t.cast_to::<f64>().ok()?;
        Some(t.to_plain_array_view::<f64>().ok()?.iter().copied().collect())
    }

    fn scalar(&self, name: &str) -> Option<f64> {
        match self.values(name)?[..] {
            [v] => Some(v),
            _ => None,
        }
    }

    /// The axes a `ReduceMean` keeping its dims reduces: its attribute, or (opset 18) input.
    fn mean_axes(&self, n: &pb::NodeProto) -> Option<Vec<i64>> {
        if super::map::attr_int(n, "keepdims").unwrap_or(1) != 1 {
            return None;
        }
        match (n.attribute.iter().find(|a| a.name == "axes"), n.input.get(1)) {
            (Some(a), _) => Some(a.ints.clone()),
            (None, Some(x)) => Some(self.values(x)?.iter().map(|&v| v as i64).collect()),
            _ => None,
        }
    }
}

/// One LayerNorm found: its input, the members from the first `ReduceMean` to the last node,
/// the axis, epsilon, the scale and the bias.
struct Found {
    x: String,
    members: Vec<usize>,
    axis: i64,
    eps: f64,
    scale: String,
    bias: Option<String>,
}

/// The other input of the binary node `i` than `name`.
fn other(n: &pb::NodeProto, name: &str) -> Option<String> {
    match &n.input[..] {
        [a, b] if a == name => Some(b.clone()),
        [a, b] if b == name => Some(a.clone()),
        _ => None,
    }
}

/// The LayerNorm whose first `ReduceMean` is node `r1`.
fn found_at(ix: &Index, r1: usize) -> Option<Found> {
    let n = &ix.nodes;
    let (x, mean) = (n[r1].input.first()?, n[r1].output.first()?);
    let axes = ix.mean_axes(&n[r1])?;
    let sub = ix.only_reader(mean, "Sub")?;
    let centred = n[sub].output.first()?;
    if n[sub].input != [x.clone(), mean.clone()] {
        return None;
    }
    let readers = ix.readers.get(centred.as_str())?;
    let (&pow, &div) = match readers[..] {
        [a, b] if n[a].op_type == "Pow" && n[b].op_type == "Div" => (&readers[0], &readers[1]),
        [a, b] if n[b].op_type == "Pow" && n[a].op_type == "Div" => (&readers[1], &readers[0]),
        _ => return None,
    };
    (n[pow].input.first() == Some(centred) && ix.scalar(n[pow].input.get(1)?)? == 2.0)
        .then_some(())?;
    let r2 = ix.only_reader(n[pow].output.first()?, "ReduceMean")?;
    (ix.mean_axes(&n[r2])? == axes).then_some(())?;
    let add = ix.only_reader(n[r2].output.first()?, "Add")?;
    let eps = ix.scalar(&other(&n[add], n[r2].output.first()?)?)?;
    let sqrt = ix.only_reader(n[add].output.first()?, "Sqrt")?;
    let std = n[sqrt].output.first()?;
    (ix.only_reader(std, "Div")? == div && n[div].input == [centred.clone(), std.clone()])
        .then_some(())?;
    let mul = ix.only_reader(n[div].output.first()?, "Mul")?;
    let scale = other(&n[mul], n[div].output.first()?).filter(|s| ix.is_weight(s))?;
    let mut members = vec![r1, sub, pow, r2, add, sqrt, div, mul];
    let bias = ix.only_reader(n[mul].output.first()?, "Add").and_then(|a| {
        let b = other(&n[a], n[mul].output.first()?).filter(|b| ix.is_weight(b))?;
        members.push(a);
        Some(b)
    });
    let axis = last_axes_from(&axes)?;
    Some(Found { x: x.clone(), members, axis, eps, scale, bias })
}

/// The node reading `name` of `op` among exactly two readers, and the other one.
fn pair_of(ix: &Index, name: &str, op: &str, other_op: &str) -> Option<(usize, usize)> {
    let n = &ix.nodes;
    match *ix.readers.get(name).map(Vec::as_slice)? {
        [a, b] if n[a].op_type == op && n[b].op_type == other_op => Some((a, b)),
        [a, b] if n[b].op_type == op && n[a].op_type == other_op => Some((b, a)),
        _ => None,
    }
}

/// The axis a mean reduces from: 2 for `GlobalAveragePool` (every axis after `[N, C]`), the
/// first of a `ReduceMean`'s axes when they are the last ones.
fn mean_from(ix: &Index, n: &pb::NodeProto) -> Option<i64> {
    if n.op_type == "GlobalAveragePool" {
        return Some(2);
    }
    last_axes_from(&ix.mean_axes(n)?)
}

/// The first of `axes` when they are the last axes (`[-2, -1]`), as a LayerNorm's `axis`.
fn last_axes_from(axes: &[i64]) -> Option<i64> {
    let axis = *axes.first()?;
    (axis < 0 && axes == (axis..0).collect::<Vec<_>>()).then_some(axis)
}

/// The LayerNorm tf2onnx writes (the module docs) whose first mean is node `m1`.
fn found_tf_at(ix: &Index, m1: usize) -> Option<Found> {
    let n = &ix.nodes;
    let (x, mean) = (n[m1].input.first()?, n[m1].output.first()?);
    let axis = mean_from(ix, &n[m1])?;
    let (sub, neg) = pair_of(ix, mean, "Sub", "Neg")?;
    (n[sub].input == [x.clone(), mean.clone()]).then_some(())?;
    let d = n[sub].output.first()?;
    // the square reads the centred value twice, and nothing else reads it
    let sq = *ix.readers.get(d.as_str())?.first()?;
    let only_sq = ix.readers[d.as_str()].iter().all(|&i| i == sq);
    (only_sq && n[sq].op_type == "Mul" && n[sq].input == [d.clone(), d.clone()]).then_some(())?;
    let m2 = *ix.readers.get(n[sq].output.first()?.as_str())?.first()?;
    (ix.readers[n[sq].output[0].as_str()].len() == 1).then_some(())?;
    (n[m2].op_type == n[m1].op_type && mean_from(ix, &n[m2]) == Some(axis)).then_some(())?;
    let add = ix.only_reader(n[m2].output.first()?, "Add")?;
    let eps = ix.scalar(&other(&n[add], n[m2].output.first()?)?)?;
    let sqrt = ix.only_reader(n[add].output.first()?, "Sqrt")?;
    let rec = ix.only_reader(n[sqrt].output.first()?, "Reciprocal")?;
    let r = n[rec].output.first()?;
    let sc = ix.only_reader(r, "Mul")?;
    let scale = other(&n[sc], r).filter(|g| ix.is_weight(g))?;
    let s = n[sc].output.first()?;
    let (xs, ms) = pair_of(ix, s, "Mul", "Mul")?;
    let (xs, ms) = if other(&n[xs], s).as_ref() == Some(x) { (xs, ms) } else { (ms, xs) };
    let neg_out = n[neg].output.first()?;
    (other(&n[xs], s).as_ref() == Some(x) && other(&n[ms], s).as_ref() == Some(neg_out))
        .then_some(())?;
    (ix.readers.get(neg_out.as_str())?.len() == 1).then_some(())?;
    let mut members = vec![m1, neg, sub, sq, m2, add, sqrt, rec, sc, xs, ms];
    let shifted = ix.only_reader(n[ms].output.first()?, "Add")?;
    let with_bias = other(&n[shifted], n[ms].output.first()?).filter(|b| ix.is_weight(b));
    let (bias, last) = match with_bias {
        Some(b) => {
            members.push(shifted);
            (Some(b), ix.only_reader(n[shifted].output.first()?, "Add")?)
        }
        None => (None, shifted),
    };
    let sum_of = |i: usize| other(&n[last], n[i].output.first()?);
    let joined = if bias.is_some() { shifted } else { ms };
    (sum_of(joined).as_ref() == n[xs].output.first()).then_some(())?;
    members.push(last);
    Some(Found { x: x.clone(), members, axis, eps, scale, bias })
}

/// Drops the leading ones of the named initializers' dims (tf2onnx's `[1, 1, C]` scale and
/// shift), as `LayerNormalization` takes them in the normalized shape, `[C]`.
fn normalized_shape(graph: &mut pb::GraphProto, names: &[String]) {
    for t in graph.initializer.iter_mut().filter(|t| names.contains(&t.name)) {
        let lead =
            t.dims.iter().take_while(|&&d| d == 1).count().min(t.dims.len().saturating_sub(1));
        t.dims.drain(..lead);
    }
}

/// Replaces each written-out LayerNorm of the model by one `LayerNormalization`, with a note.
pub(super) fn fuse(model: &mut pb::ModelProto) {
    let Some(graph) = model.graph.as_mut() else { return };
    let is_mean =
        |n: &pb::NodeProto| matches!(n.op_type.as_str(), "ReduceMean" | "GlobalAveragePool");
    if !graph.node.iter().any(is_mean) {
        return;
    }
    let ix = Index::of(graph);
    let found: Vec<Found> = (0..graph.node.len())
        .filter(|&i| is_mean(&graph.node[i]))
        .filter_map(|i| found_at(&ix, i).or_else(|| found_tf_at(&ix, i)))
        .collect();
    if found.is_empty() {
        return;
    }
    let weights: Vec<String> =
        found.iter().flat_map(|f| [Some(f.scale.clone()), f.bias.clone()]).flatten().collect();
    normalized_shape(graph, &weights);
    let mut replace: HashMap<usize, pb::NodeProto> = HashMap::default();
    let mut drop = vec![false; graph.node.len()];
    for f in &found {
        let last = *f.members.iter().max().unwrap_or(&0);
        for &m in &f.members {
            drop[m] = true;
        }
        replace.insert(last, layer_norm(f, &graph.node[*f.members.last().unwrap_or(&0)]));
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| replace.remove(&i).or((!drop[i]).then_some(n)))
        .collect();
    let note = format!(
        "{} LayerNorms written out (PyTorch below opset 17: ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add; tf2onnx: mean, Sub, Mul, Sqrt, Reciprocal, Mul, Neg, Add) read as LayerNormalization",
        found.len()
    );
    super::add_read_note(model, note);
}

/// The `LayerNormalization` of `f`, writing what `tail` (its last node) wrote.
fn layer_norm(f: &Found, tail: &pb::NodeProto) -> pb::NodeProto {
    let mut input = vec![f.x.clone(), f.scale.clone()];
    input.extend(f.bias.clone());
    let (axis, eps) =
        (super::write::int("axis", f.axis), super::write::float("epsilon", f.eps as f32));
    pb::NodeProto {
        op_type: "LayerNormalization".into(),
        name: format!("{}/nape_layer_norm", tail.name),
        input,
        output: tail.output.clone(),
        attribute: vec![axis, eps],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::fuse;
    use tract_onnx::pb;

    fn node(op: &str, input: &[&str], output: &str) -> pb::NodeProto {
        super::super::test_node(op, input, output, "")
    }

    fn scalar(name: &str, v: f32) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: 1,
            float_data: vec![v],
            ..Default::default()
        }
    }

    fn axes(mut n: pb::NodeProto, a: &[i64]) -> pb::NodeProto {
        use pb::attribute_proto::AttributeType;
        let ints = a.to_vec();
        let t = AttributeType::Ints as i32;
        n.attribute.push(pb::AttributeProto {
            name: "axes".into(),
            r#type: t,
            ints,
            ..Default::default()
        });
        n
    }

    /// The op types of a graph of `nodes` and `inits` after [`fuse`].
    fn op_types_after_fuse(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>) -> Vec<String> {
        let graph = pb::GraphProto { node: nodes, initializer: inits, ..Default::default() };
        let mut m = pb::ModelProto { graph: Some(graph), ..Default::default() };
        fuse(&mut m);
        m.graph.unwrap().node.iter().map(|n| n.op_type.clone()).collect()
    }

    /// PyTorch's LayerNorm below opset 17, over `a1` and `a2`, with `pow` as the exponent; the
    /// op types after [`fuse`].
    fn fused(a1: &[i64], a2: &[i64], pow: f32, extra: Option<pb::NodeProto>) -> Vec<String> {
        let mut nodes = vec![
            axes(node("ReduceMean", &["x"], "m"), a1),
            node("Sub", &["x", "m"], "d"),
            node("Pow", &["d", "two"], "p"),
            axes(node("ReduceMean", &["p"], "v"), a2),
            node("Add", &["v", "eps"], "ve"),
            node("Sqrt", &["ve"], "s"),
            node("Div", &["d", "s"], "n"),
            node("Identity", &["w"], "g"),
            node("Mul", &["n", "g"], "ng"),
            node("Add", &["ng", "b"], "y"),
        ];
        nodes.extend(extra);
        let inits =
            vec![scalar("two", pow), scalar("eps", 1e-5), scalar("w", 1.0), scalar("b", 0.0)];
        op_types_after_fuse(nodes, inits)
    }

    #[test]
    fn pytorch_s_written_out_layer_norm_reads_as_one_op() {
        assert_eq!(fused(&[-1], &[-1], 2.0, None), ["Identity", "LayerNormalization"]);
        assert_eq!(fused(&[-2, -1], &[-2, -1], 2.0, None), ["Identity", "LayerNormalization"]);
    }

    #[test]
    fn anything_else_is_left_as_written() {
        let left =
            |ops: Vec<String>| assert!(!ops.contains(&"LayerNormalization".to_string()), "{ops:?}");
        left(fused(&[-1], &[-1], 3.0, None)); // not a variance
        left(fused(&[-1], &[-2], 2.0, None)); // two different axes
        left(fused(&[1], &[1], 2.0, None)); // not the last axes
        left(fused(&[-1], &[-1], 2.0, Some(node("Relu", &["d"], "r")))); // the centred value read elsewhere
    }
    /// tf2onnx's Keras LayerNorm (the module docs), with or without the shift.
    fn tf_fused(mean: &str, with_bias: bool) -> Vec<String> {
        let mean_of = |x: &str, y: &str| {
            let n = node(mean, &[x], y);
            if mean == "ReduceMean" {
                axes(n, &[-1])
            } else {
                n
            }
        };
        let mut nodes = vec![
            mean_of("x", "m"),
            node("Neg", &["m"], "nm"),
            node("Sub", &["x", "m"], "d"),
            node("Mul", &["d", "d"], "sq"),
            mean_of("sq", "v"),
            node("Add", &["v", "eps"], "ve"),
            node("Sqrt", &["ve"], "s"),
            node("Reciprocal", &["s"], "r"),
            node("Mul", &["r", "w"], "sc"),
            node("Mul", &["x", "sc"], "xs"),
            node("Mul", &["nm", "sc"], "ms"),
        ];
        if with_bias {
            nodes.push(node("Add", &["ms", "b"], "shift"));
            nodes.push(node("Add", &["xs", "shift"], "y"));
        } else {
            nodes.push(node("Add", &["xs", "ms"], "y"));
        }
        let inits = vec![scalar("eps", 1e-3), scalar("w", 1.0), scalar("b", 0.5)];
        op_types_after_fuse(nodes, inits)
    }

    #[test]
    fn tf2onnx_s_written_out_layer_norm_reads_as_one_op() {
        for mean in ["GlobalAveragePool", "ReduceMean"] {
            for bias in [true, false] {
                assert_eq!(tf_fused(mean, bias), ["LayerNormalization"], "{mean} {bias}");
            }
        }
    }
}
