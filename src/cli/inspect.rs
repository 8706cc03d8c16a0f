//! `nape inspect`: what is in an ONNX file, as nape sees it.

use super::util::{collect_onnx_files, OutputFormat, ShapeArgs};
use crate::error::exit;
use crate::graph::{to_dot, Cg};
use crate::onnx::{load, ImportOptions};
use rayon::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `nape inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// ONNX files or folders (searched recursively for .onnx files).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// One JSON document (the whole graph for one file; a list for several).
    #[arg(long, conflicts_with_all = ["dot", "csv", "jsonl"])]
    pub json: bool,
    /// One JSON summary object per file per line.
    #[arg(long, conflicts_with_all = ["dot", "csv"])]
    pub jsonl: bool,
    /// A CSV summary, one row per file.
    #[arg(long, conflicts_with = "dot")]
    pub csv: bool,
    /// Graphviz DOT of the graph (one file only).
    #[arg(long)]
    pub dot: bool,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Unknown ops are errors (exit code 4) instead of Unknown nodes.
    #[arg(long)]
    pub strict: bool,
    /// Show the canonical graph (BatchNorm folded into the preceding conv, Linear biases
    /// folded), the form features are computed on.
    #[arg(long)]
    pub canonical: bool,
}

/// What the several-file outputs show of one graph, so that each graph is dropped as soon as
/// it is read (holding 100 graphs at once was most of `inspect`'s page faults).
pub struct Brief {
    summary: crate::graph::Summary,
    notes: Vec<String>,
    hash: String,
    /// The shape each data input was read at (its symbolic dims bound).
    inputs: Vec<(String, crate::graph::Shape)>,
}

impl Brief {
    pub fn of(cg: &Cg) -> Brief {
        let inputs = input_shapes(cg);
        Brief { summary: cg.summary(), notes: cg.notes.clone(), hash: graph_hash(cg), inputs }
    }
}

/// The data inputs of `cg` and the shapes they were read at, in the graph's order.
fn input_shapes(cg: &Cg) -> Vec<(String, crate::graph::Shape)> {
    cg.nodes()
        .filter(|(_, n)| n.kind == crate::graph::OpKind::Input)
        .map(|(_, n)| (n.name.clone(), n.out_shapes.first().cloned().unwrap_or_default()))
        .collect()
}

/// One file's entry in `inspect --json` (and the Python front's `nape.inspect`).
pub fn summary_json(file: &str, cg: &Cg) -> serde_json::Value {
    brief_json(file, &Brief::of(cg))
}

fn brief_json(file: &str, b: &Brief) -> serde_json::Value {
    let s = &b.summary;
    json!({
        "file": file,
        "ok": true,
        "nodes": s.nodes,
        "edges": s.edges,
        "params": s.params,
        "macs": s.macs,
        "bounded_macs": s.bounded_macs,
        "undecided_params": s.undecided_params,
        "flops": s.flops,
        "depth": s.depth,
        "max_channels": s.max_channels,
        "max_activation": {"elements": s.max_activation.0, "node": s.max_activation.1},
        "by_kind": s.by_kind,
        "unknown_ops": s.unknown,
        "undecided": !b.notes.is_empty(),
        "notes": b.notes,
        "graph_hash": b.hash,
        "input_shapes": b.inputs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

fn human(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} G", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2} M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1} k", f / 1e3)
    } else {
        n.to_string()
    }
}

/// A file's brief or error.
type Entry = (String, crate::Result<Brief>);

/// Runs `nape inspect`.
pub fn run(a: &InspectArgs) -> anyhow::Result<i32> {
    let files = collect_onnx_files(&a.paths);
    if files.is_empty() {
        anyhow::bail!(crate::Error::MissingData {
            what: "ONNX files".into(),
            path: a.paths[0].clone(),
            hint: "; the folder holds no .onnx file".into(),
        });
    }
    if a.dot && files.len() != 1 {
        anyhow::bail!(crate::Error::Usage("--dot takes exactly one file".into()));
    }
    let opts = ImportOptions { strict: a.strict, shapes_only: true, ..a.shape.options() };
    let read = |f: &PathBuf| load(f, &opts).map(|cg| if a.canonical { cg.canonical() } else { cg });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let format = format_of(a);
    if files.len() == 1 {
        // one file: its whole graph; its error is the command's error
        let cg = read(&files[0])?;
        let f = files[0].display().to_string();
        match format {
            _ if a.dot => write!(out, "{}", to_dot(&cg))?,
            OutputFormat::Json => write_one_json(&mut out, &cg)?,
            OutputFormat::Table => write_one_table(&mut out, &f, &cg)?,
            _ => write_briefs(&mut out, format, &[(f, Ok(Brief::of(&cg)))])?,
        }
        out.flush()?;
        return Ok(exit::OK);
    }
    let results: Vec<Entry> = files
        .par_iter()
        .map(|f| (f.display().to_string(), read(f).map(|cg| Brief::of(&cg))))
        .collect();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    write_briefs(&mut out, format, &results)?;
    out.flush()?;
    for (_, r) in &results {
        if let Err(e) = r {
            eprintln!("error: {e}");
        }
    }
    Ok(exit_code(&results, failed))
}

/// The several-file outputs (one line, row or entry per file).
fn write_briefs(
    out: &mut impl Write,
    format: OutputFormat,
    results: &[Entry],
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => write_json(out, results),
        OutputFormat::Jsonl => write_jsonl(out, results),
        OutputFormat::Csv => write_csv(out, results),
        OutputFormat::Table => write_table(out, results),
    }
}

fn format_of(a: &InspectArgs) -> OutputFormat {
    if a.json {
        OutputFormat::Json
    } else if a.jsonl {
        OutputFormat::Jsonl
    } else if a.csv {
        OutputFormat::Csv
    } else {
        OutputFormat::Table
    }
}

fn exit_code(results: &[Entry], failed: usize) -> i32 {
    if failed == 0 {
        exit::OK
    } else if failed == results.len() {
        results
            .iter()
            .find_map(|(_, r)| r.as_ref().err().map(|e| e.exit_code()))
            .unwrap_or(exit::FAILURE)
    } else {
        exit::PARTIAL
    }
}

fn error_json(f: &str, e: &crate::Error) -> serde_json::Value {
    json!({"file": f, "ok": false, "error": e.to_string(), "exit_code": e.exit_code()})
}

/// The whole graph of one file, with its summary.
fn write_one_json(out: &mut impl Write, cg: &Cg) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(cg.to_json())?;
    let s = cg.summary();
    v["nape_version"] = json!(env!("CARGO_PKG_VERSION"));
    v["units"] = json!({"params": "count", "macs": "multiply-accumulates", "flops": "floating-point operations, 2 per MAC plus elementwise work"});
    v["summary"] = json!({"by_kind": s.by_kind, "max_channels": s.max_channels, "unknown_ops": s.unknown, "bounded_macs": s.bounded_macs, "undecided_params": s.undecided_params, "undecided": !cg.notes.is_empty(), "notes": cg.notes, "graph_hash": graph_hash(cg)});
    serde_json::to_writer_pretty(&mut *out, &v)?;
    writeln!(out)?;
    Ok(())
}

fn write_json(out: &mut impl Write, results: &[Entry]) -> anyhow::Result<()> {
    let files: Vec<_> = results
        .iter()
        .map(|(f, r)| match r {
            Ok(b) => brief_json(f, b),
            Err(e) => error_json(f, e),
        })
        .collect();
    let doc = json!({"schema_version": crate::graph::CG_SCHEMA_VERSION, "nape_version": env!("CARGO_PKG_VERSION"), "files": files});
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

fn write_jsonl(out: &mut impl Write, results: &[Entry]) -> anyhow::Result<()> {
    for (f, r) in results {
        let v = match r {
            Ok(b) => brief_json(f, b),
            Err(e) => error_json(f, e),
        };
        writeln!(out, "{v}")?;
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, results: &[Entry]) -> anyhow::Result<()> {
    writeln!(out, "file,ok,nodes,params,macs,flops,depth,unknown_ops,graph_hash,error")?;
    for (f, r) in results {
        match r {
            Ok(b) => {
                let s = &b.summary;
                let unknown = s.unknown.values().sum::<usize>();
                let (n, p, m, fl, d) = (s.nodes, s.params, s.macs, s.flops, s.depth);
                let h = &b.hash;
                writeln!(out, "{},true,{n},{p},{m},{fl},{d},{unknown},{h},", csv_field(f))?;
            }
            Err(e) => writeln!(out, "{},false,,,,,,,,{}", csv_field(f), csv_field(&e.to_string()))?,
        }
    }
    Ok(())
}

fn write_one_table(out: &mut impl Write, f: &str, cg: &Cg) -> anyhow::Result<()> {
    let s = cg.summary();
    writeln!(out, "{f}")?;
    for (name, shape) in input_shapes(cg) {
        writeln!(out, "  input        {name} {shape:?}")?;
    }
    writeln!(out, "  nodes        {} ({} edges)", s.nodes, s.edges)?;
    writeln!(out, "  parameters   {} ({})", s.params, human(s.params))?;
    writeln!(out, "  MACs         {} ({})", s.macs, human(s.macs))?;
    writeln!(out, "  FLOPs        {} ({})", s.flops, human(s.flops))?;
    writeln!(out, "  depth        {} compute ops on the longest path", s.depth)?;
    writeln!(out, "  widest       {} channels", s.max_channels)?;
    writeln!(out, "  largest act. {} elements at '{}'", s.max_activation.0, s.max_activation.1)?;
    writeln!(out, "  graph hash   {}", graph_hash(cg))?;
    writeln!(out, "  ops by kind:")?;
    let mut kinds: Vec<_> = s.by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, n) in kinds {
        let flag = if s.unknown.contains_key(k) { "  (unknown op)" } else { "" };
        writeln!(out, "    {k:<16} {n:>6}{flag}")?;
    }
    Ok(())
}

fn write_table(out: &mut impl Write, results: &[Entry]) -> anyhow::Result<()> {
    let (nodes, params, flops, depth) = ("nodes", "params", "FLOPs", "depth");
    writeln!(out, "{:<48} {nodes:>6} {params:>12} {flops:>14} {depth:>6}  status", "file")?;
    for (f, r) in results {
        match r {
            Ok(b) => {
                let s = &b.summary;
                let (n, p, fl, d) = (s.nodes, s.params, s.flops, s.depth);
                writeln!(out, "{f:<48} {n:>6} {p:>12} {fl:>14} {d:>6}  ok")?;
            }
            Err(e) => {
                let dash = "-";
                writeln!(out, "{f:<48} {dash:>6} {dash:>12} {dash:>14} {dash:>6}  error: {e}")?
            }
        }
    }
    Ok(())
}

/// The hash of the canonical graph: equal for every export of one network (see
/// [`Cg::structure_hash`]).
fn graph_hash(cg: &Cg) -> String {
    cg.canonical().structure_hash()
}

/// Quotes a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
