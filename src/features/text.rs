//! The ONNX-Net-style text serialisation of a CG and its fixed-vocabulary tokenizer.
//!
//! [`to_text`] writes one block per compute node, in topological order, as ONNX-Net's
//! `chain_slim` mode does (ANCHORS.md section 2):
//!
//! ```text
//! In1(1,3,32,32)-->V1:
//! Op: Conv(kernel=3x3,pad=1,bias=1)
//! W: [128,3,3,3]
//! ```
//!
//! Tensors are renamed `In{i}` (graph inputs), `V{j}` (the output of the j-th compute node;
//! `V{j}#{slot}` for a later output of a multi-output node) and `Out{i}` (graph outputs). Every
//! input is written with its shape inline. Attributes at their default (stride 1, no padding,
//! dilation 1, one group) are left out; weighted ops always say `bias=0|1`. Each weighted op
//! lists its weight shape (`W: [C_out,C_in/groups,k..]`, a Linear `[out,in]`, a ConvTranspose
//! `[C_in,C_out/groups,k..]`); the bias shape follows from `bias=1` and is not repeated. Other
//! ops that own parameters list their count (`P: [n]`). The text ends with one block per graph
//! output, `V9(1,10)-->Out1:` / `Op: Output(1,10)`.
//!
//! [`tokenize`] maps the text to ids of a fixed vocabulary ([`VOCAB_SIZE`] ids, no learned
//! merges): 5 specials (PAD 0, UNK 1, BOS 2, EOS 3, TRUNC 4), the punctuation `--> ( ) [ ] = #`,
//! the structural and attribute words, every op name of the vocabulary, the
//! integers 0..=256 as themselves, larger integers in quarter-octave buckets (2^8 to 2^48) and
//! other numbers in signed decade buckets (1e-16 to 1e16). The separators `,`, `:` and newline
//! carry no information once every number is one token and every block starts with `-->`'s
//! inputs and `Op`, so they are not emitted; a tensor name `V12` is two tokens (`V`, `12`). A sequence starts with BOS and ends with EOS, or with TRUNC when it
//! was cut at [`super::MAX_TOKENS`].
//!
//! Why 512 tokens: a node block costs about 12 (ReLU) to 35 (convolution with its weight
//! shape) tokens; measured on 2,000 cells each, 512 tokens hold the first 22 blocks of NB-101
//! and NB-201 networks (146 and 175 canonical nodes). That is the stem and the whole first
//! cell of every NB-201 network (at most 16 blocks) and of most NB-101 ones. Cell-based
//! networks repeat one cell, so the head of the text carries the architecture; what truncation
//! drops (later stacks, channel growth, totals) is in the graph-level features. Doubling the
//! length would mostly repeat cells and make the token encoder's attention (quadratic in the
//! length) four times dearer on the CPU.

use super::{FEATURE_KINDS, MAX_TOKENS};
use crate::graph::{Cg, OpKind, OpNode};
use petgraph::visit::NodeIndexable;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Padding id.
pub const PAD: u32 = 0;
/// Unknown word (an op outside the vocabulary, an unfamiliar attribute name).
pub const UNK: u32 = 1;
/// Start of a sequence.
pub const BOS: u32 = 2;
/// End of a sequence that was not truncated.
pub const EOS: u32 = 3;
/// End of a sequence cut at `MAX_TOKENS`.
pub const TRUNC: u32 = 4;
const SPECIALS: usize = 5;

/// Punctuation tokens, in vocabulary order (`,`, `:` and newlines are read but not emitted).
pub const PUNCT: &[&str] = &["-->", "(", ")", "[", "]", "=", "#"];

/// Structural and attribute words, in vocabulary order (op names follow them).
pub const WORDS: &[&str] = &[
    "In",
    "V",
    "Out",
    "Op",
    "W",
    "P",
    "x",
    "kernel",
    "stride",
    "pad",
    "dilation",
    "group",
    "bias",
    "axes",
    "alpha",
    "beta",
    "gamma",
    "epsilon",
    "min",
    "max",
    "mode",
    "keepdims",
    "count_include_pad",
    "lambd",
];

/// Integers written as themselves: 0..=EXACT_INTS.
const EXACT_INTS: usize = 256;
/// Quarter-octave buckets for integers above EXACT_INTS (up to 2^48).
const INT_BUCKETS: usize = 160;
/// Decade exponents of other numbers: -16..=16 per sign.
const FLOAT_EXP: i32 = 16;
const FLOAT_BUCKETS: usize = 2 * (2 * FLOAT_EXP as usize + 1);

const PUNCT_BASE: usize = SPECIALS;
const WORD_BASE: usize = PUNCT_BASE + PUNCT.len();
const OP_BASE: usize = WORD_BASE + WORDS.len();
const INT_BASE: usize = OP_BASE + FEATURE_KINDS.len();
const BUCKET_BASE: usize = INT_BASE + EXACT_INTS + 1;
const FLOAT_BASE: usize = BUCKET_BASE + INT_BUCKETS;

/// Number of token ids [`tokenize`] can produce.
pub const VOCAB_SIZE: usize = FLOAT_BASE + FLOAT_BUCKETS;

/// The vocabulary: the string each id stands for (numbers and buckets written as `<int 2^8.25>`
/// or `<num -1e-5>`), for reports and checkpoints.
pub fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> =
        ["<pad>", "<unk>", "<bos>", "<eos>", "<trunc>"].iter().map(|s| s.to_string()).collect();
    v.extend(PUNCT.iter().map(|s| s.to_string()));
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v.extend(FEATURE_KINDS.iter().map(|k| k.as_str().to_string()));
    v.extend((0..=EXACT_INTS).map(|i| i.to_string()));
    v.extend((0..INT_BUCKETS).map(|b| format!("<int 2^{:.2}>", 8.0 + b as f64 / 4.0)));
    for sign in ["", "-"] {
        v.extend((-FLOAT_EXP..=FLOAT_EXP).map(|e| format!("<num {sign}1e{e}>")));
    }
    v
}

fn word_id(w: &str) -> u32 {
    if let Some(i) = WORDS.iter().position(|&x| x == w) {
        return (WORD_BASE + i) as u32;
    }
    match FEATURE_KINDS.iter().position(|k| k.as_str() == w) {
        Some(i) => (OP_BASE + i) as u32,
        None => UNK,
    }
}

fn int_id(n: u64) -> u32 {
    if n as usize <= EXACT_INTS && n <= EXACT_INTS as u64 {
        return (INT_BASE + n as usize) as u32;
    }
    let b = ((n as f64).log2() - 8.0) * 4.0;
    let b = (b.floor().max(0.0) as usize).min(INT_BUCKETS - 1);
    (BUCKET_BASE + b) as u32
}

fn num_id(text: &str) -> u32 {
    if let Ok(n) = text.parse::<u64>() {
        return int_id(n);
    }
    let Ok(v) = text.parse::<f64>() else { return UNK };
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { int_id(0) } else { UNK };
    }
    let e = v.abs().log10().floor().clamp(-FLOAT_EXP as f64, FLOAT_EXP as f64) as i32;
    let sign = usize::from(v < 0.0) * (2 * FLOAT_EXP as usize + 1);
    (FLOAT_BASE + sign + (e + FLOAT_EXP) as usize) as u32
}

/// Token ids of `text` (see the module docs): BOS, the tokens, then EOS; cut to
/// [`MAX_TOKENS`] with TRUNC as the last id when longer.
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut out = vec![BOS];
    let b = text.as_bytes();
    let mut i = 0;
    // one token past the limit tells us whether we truncated
    while i < b.len() && out.len() <= MAX_TOKENS {
        let c = b[i];
        let starts_number =
            c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if c == b'-' && b[i..].starts_with(b"-->") {
            out.push(PUNCT_BASE as u32);
            i += 3;
        } else if starts_number {
            let start = i;
            i = number_end(b, i);
            out.push(num_id(&text[start..i]));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            word_tokens(&text[start..i], &mut out);
        } else {
            if let Some(p) = PUNCT.iter().position(|p| p.as_bytes() == [c]) {
                out.push((PUNCT_BASE + p) as u32);
            } else if !(c.is_ascii_whitespace() || c == b',' || c == b':') {
                out.push(UNK);
            }
            // skip a whole UTF-8 character
            i += 1;
            while i < b.len() && (b[i] & 0xC0) == 0x80 {
                i += 1;
            }
        }
    }
    if out.len() > MAX_TOKENS - 1 {
        out.truncate(MAX_TOKENS - 1);
        out.push(TRUNC);
    } else {
        out.push(EOS);
    }
    out
}

/// The end of the number starting at `b[i]` (a digit or a minus before one): digits, a
/// fraction, an exponent.
fn number_end(b: &[u8], mut i: usize) -> usize {
    let digits = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    i = digits(i + 1);
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i = digits(i + 1);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            i = digits(j);
        }
    }
    i
}

/// A word's tokens: tensor names In12, V3, Out1 and the `x3` of `3x3` as word + number, any
/// other word as itself.
fn word_tokens(w: &str, out: &mut Vec<u32>) {
    let split = ["In", "V", "Out", "x"].iter().find_map(|p| {
        let rest = w.strip_prefix(p)?;
        (!rest.is_empty() && rest.bytes().all(|d| d.is_ascii_digit())).then_some((p, rest))
    });
    match split {
        Some((p, rest)) => {
            out.push(word_id(p));
            out.push(num_id(rest));
        }
        None => out.push(word_id(w)),
    }
}

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
}

fn xs(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// A number as short text: integers without a fraction, others in Rust's shortest form.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// An op name safe for the text (Unknown ops keep only ASCII letters, digits and `_`).
fn op_name(k: &OpKind) -> String {
    let s: String = k.as_str().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Op_{s}")
    } else {
        s
    }
}

fn attrs_text(n: &OpNode) -> String {
    let a = &n.attrs;
    let mut parts = Vec::new();
    if !a.kernel.is_empty() {
        parts.push(format!("kernel={}", xs(&a.kernel)));
    }
    if a.stride.iter().any(|&s| s != 1) {
        parts.push(format!("stride={}", xs(&a.stride)));
    }
    if a.padding.iter().any(|&p| p != 0) {
        let all_same = a.padding.iter().all(|&p| p == a.padding[0]);
        parts.push(if all_same {
            format!("pad={}", a.padding[0])
        } else {
            format!("pad={}", xs(&a.padding))
        });
    }
    if a.dilation.iter().any(|&d| d != 1) {
        parts.push(format!("dilation={}", xs(&a.dilation)));
    }
    if let Some(g) = a.groups.filter(|&g| g != 1) {
        parts.push(format!("group={g}"));
    }
    if n.kind.is_weighted() {
        parts.push(format!("bias={}", u8::from(a.bias == Some(true))));
    }
    if !a.axes.is_empty() {
        let ax: Vec<String> = a.axes.iter().map(|x| x.to_string()).collect();
        parts.push(format!("axes={}", ax.join("x")));
    }
    for (k, v) in &a.values {
        let k: String = k.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !k.is_empty() && !k.starts_with(|c: char| c.is_ascii_digit()) {
            parts.push(format!("{k}={}", num(*v)));
        }
    }
    parts.join(",")
}

/// The weight shape of a weighted node, if it can be told from its attributes and shapes.
fn weight_shape(n: &OpNode) -> Option<Vec<usize>> {
    let cin = n.in_shapes.first()?;
    let cout = n.out_shape();
    let groups = n.attrs.groups.unwrap_or(1).max(1);
    match n.kind {
        OpKind::Conv => {
            let mut w = vec![*cout.get(1)?, *cin.get(1)? / groups];
            w.extend(&n.attrs.kernel);
            Some(w)
        }
        OpKind::ConvTranspose => {
            let mut w = vec![*cin.get(1)?, *cout.get(1)? / groups];
            w.extend(&n.attrs.kernel);
            Some(w)
        }
        OpKind::Linear => Some(vec![*cout.last()?, *cin.last()?]),
        _ => None,
    }
}

/// The ONNX-Net-style text of a CG (see the module docs). Reads the graph as given: callers
/// that want the canonical form (as [`super::encode`] does) canonicalise first.
pub fn to_text(cg: &Cg) -> String {
    let g = &cg.graph;
    let name = value_names(cg);
    let mut text = String::new();
    let mut outputs: BTreeMap<usize, String> = BTreeMap::new();
    for n in g.node_indices() {
        let node = &g[n];
        if node.kind == OpKind::Input {
            continue;
        }
        let ins: Vec<String> = cg
            .inputs_of(n)
            .iter()
            .map(|(src, e)| {
                let src_names = &name[src.index()];
                let nm =
                    src_names.get(e.src_slot).or(src_names.first()).cloned().unwrap_or_default();
                format!("{nm}({})", dims(&e.shape))
            })
            .collect();
        let outs = name[n.index()].join(",");
        let mut block = String::new();
        let _ = writeln!(block, "{}-->{outs}:", ins.join(","));
        if node.kind == OpKind::Output {
            let shape = node.in_shapes.first().map(|s| dims(s)).unwrap_or_default();
            let _ = writeln!(block, "Op: Output({shape})");
            outputs.insert(n.index(), block);
            continue;
        }
        let _ = writeln!(block, "Op: {}({})", op_name(&node.kind), attrs_text(node));
        if let Some(w) = node.kind.is_weighted().then(|| weight_shape(node)).flatten() {
            let _ = writeln!(block, "W: [{}]", dims(&w));
        } else if node.params > 0 {
            let _ = writeln!(block, "P: [{}]", node.params);
        }
        text.push_str(&block);
    }
    // graph outputs close the text, in topological order
    for block in outputs.values() {
        text.push_str(block);
    }
    text
}

/// Each node's value names, by node index: `In1, In2, ...` for inputs, `Out1, ...` for outputs,
/// `V1, V2, ...` for the rest, with `V3#1, V3#2` for a node's second and third outputs.
fn value_names(cg: &Cg) -> Vec<Vec<String>> {
    let g = &cg.graph;
    let mut name: Vec<Vec<String>> = vec![Vec::new(); g.node_bound()];
    let (mut n_in, mut n_v, mut n_out) = (0usize, 0usize, 0usize);
    for n in g.node_indices() {
        let node = &g[n];
        name[n.index()] = match node.kind {
            OpKind::Input => {
                n_in += 1;
                vec![format!("In{n_in}")]
            }
            OpKind::Output => {
                n_out += 1;
                vec![format!("Out{n_out}")]
            }
            _ => {
                n_v += 1;
                let k = node.out_shapes.len().max(1);
                (0..k)
                    .map(|s| if s == 0 { format!("V{n_v}") } else { format!("V{n_v}#{s}") })
                    .collect()
            }
        };
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_has_one_name_per_id_and_ids_stay_in_range() {
        let v = vocabulary();
        assert_eq!(v.len(), VOCAB_SIZE);
        let set: std::collections::BTreeSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len(), "duplicate vocabulary names");
        for t in tokenize(
            "In1(1,3,32,32)-->V1:\nOp: Conv(kernel=3x3,bias=1)\nW: [999999,3]\nx=1e-5 y=-3.5 ~",
        ) {
            assert!((t as usize) < VOCAB_SIZE);
        }
    }

    #[test]
    fn tokens_read_numbers_names_and_punctuation() {
        let t = tokenize("V12(1,64)-->V13:\nOp: Relu()\n");
        let v = vocabulary();
        let words: Vec<&str> = t.iter().map(|&i| v[i as usize].as_str()).collect();
        assert_eq!(
            words,
            [
                "<bos>", "V", "12", "(", "1", "64", ")", "-->", "V", "13", "Op", "Relu", "(", ")",
                "<eos>"
            ]
        );
        // numbers: exact up to 256, buckets above, decades for fractions
        assert_eq!(int_id(256), (INT_BASE + 256) as u32);
        assert_eq!(int_id(257), BUCKET_BASE as u32);
        assert!(int_id(1 << 20) > int_id(1 << 12));
        assert_eq!(v[num_id("0.00001") as usize], "<num 1e-5>");
        assert_eq!(v[num_id("-2.5") as usize], "<num -1e0>");
        assert_eq!(v[num_id("1e-5") as usize], "<num 1e-5>");
        assert_eq!(tokenize("Frobnicate")[1], UNK);
    }

    #[test]
    fn long_text_is_cut_with_trunc() {
        let text = "Op: Relu()\n".repeat(1000);
        let t = tokenize(&text);
        assert_eq!(t.len(), MAX_TOKENS);
        assert_eq!(t[0], BOS);
        assert_eq!(*t.last().unwrap(), TRUNC);
        let short = tokenize("Op: Relu()\n");
        assert_eq!(*short.last().unwrap(), EOS);
    }
}
