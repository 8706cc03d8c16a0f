//! `nape predict`: predicted accuracy and uncertainty of ONNX files (or folders), with what the
//! model predicts. A file that cannot be read is reported and the batch goes on (exit 5).

use super::util::{collect_onnx_files, OutputFormat, ShapeArgs};
use crate::error::exit;
use crate::predict::{Predictor, DEFAULT_MODEL};
use crate::train::model;
use std::path::PathBuf;

/// Arguments of `nape predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// ONNX files or folders (searched recursively for .onnx files).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Model name (folder under the models folder) or path.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Folder of model folders (default: $NAPE_MODELS, else ./models).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// One JSON document.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header.
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data folder with the images of the proxies a model reads as features (default:
    /// $NAPE_DATA, else ../shared/data; unused by models without proxy features).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// Below this in-domain score the table marks a network "far" and warns.
const FAR: f64 = 0.5;

/// Runs `nape predict`.
pub fn run(a: &PredictArgs) -> anyhow::Result<i32> {
    let files = collect_onnx_files(&a.paths);
    if files.is_empty() {
        return Err(crate::Error::Usage("no .onnx files found in the given paths".into()).into());
    }
    let opts = a.shape.options();
    let data = crate::dataset::data_dir(a.data.as_deref());
    let dir = crate::predict::resolve_model(&a.model, a.models.as_deref());
    let p = Predictor::load(&dir, model::device(&a.device)?, opts, &data)?;
    let results = p.predict_files(&files);
    let failed = results.iter().filter(|r| r.is_err()).count();
    let format = if a.json {
        OutputFormat::Json
    } else if a.csv {
        OutputFormat::Csv
    } else {
        OutputFormat::Table
    };
    match format {
        OutputFormat::Json | OutputFormat::Jsonl => print_json(&p, &files, &results)?,
        OutputFormat::Csv => print_csv(&files, &results),
        OutputFormat::Table => print_table(&p, &files, &results),
    }
    for (f, r) in files.iter().zip(&results) {
        if let Err(e) = r {
            eprintln!("warning: {}: {e}", f.display());
        }
    }
    Ok(if failed == 0 {
        exit::OK
    } else if failed == files.len() {
        // every file failed: the first error's class (3 for a missing file, 4 for a bad one)
        results.iter().find_map(|r| r.as_ref().err().map(|e| e.exit_code())).unwrap_or(exit::ONNX)
    } else {
        exit::PARTIAL
    })
}

type Results = [crate::Result<crate::predict::Prediction>];

/// One JSON document: the model, what it predicts, one entry per file.
fn print_json(p: &Predictor, files: &[PathBuf], results: &Results) -> anyhow::Result<()> {
    let items: Vec<serde_json::Value> = files
        .iter()
        .zip(results)
        .map(|(f, r)| crate::predict::item_json(&f.display().to_string(), r))
        .collect();
    let mut doc = p.header_json();
    doc["predictions"] = serde_json::Value::Array(items);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// CSV with a header; `in_domain` last (after `error`, so older readers keep their columns).
fn print_csv(files: &[PathBuf], results: &Results) {
    println!("file,prediction,uncertainty,params,flops,error,in_domain");
    for (f, r) in files.iter().zip(results) {
        let name = f.display().to_string().replace('"', "\"\"");
        match r {
            Ok(x) => println!(
                "\"{name}\",{},{},{},{},,{}",
                x.prediction,
                x.uncertainty,
                x.params,
                x.flops,
                x.in_domain.map(|d| d.to_string()).unwrap_or_default()
            ),
            Err(e) => {
                println!("\"{name}\",,,,,\"{}\",", e.to_string().replace('"', "\"\""))
            }
        }
    }
}

/// The table, networks far from the model's training networks marked, and a warning.
fn print_table(p: &Predictor, files: &[PathBuf], results: &Results) {
    let meta = &p.model().meta;
    let members = match p.members() {
        1 => String::new(),
        n => format!(" (ensemble of {n})"),
    };
    println!("model {}{members} predicts: {}", meta.name, meta.predicts);
    println!(
        "{:<48} {:>12} {:>12} {:>12} {:>10}",
        "file", "prediction", "uncertainty", "params", "in_domain"
    );
    let mut far = 0;
    for (f, r) in files.iter().zip(results) {
        match r {
            Ok(x) => {
                let d = x.in_domain.map_or("-".into(), |d| format!("{d:.2}"));
                let flag = if x.in_domain.is_some_and(|d| d < FAR) { "  far" } else { "" };
                far += usize::from(!flag.is_empty());
                println!(
                    "{:<48} {:>12.4} {:>12.4} {:>12.0} {d:>10}{flag}",
                    f.display(),
                    x.prediction,
                    x.uncertainty,
                    x.params
                )
            }
            Err(e) => println!("{:<48} error: {e}", f.display()),
        }
    }
    if far > 0 {
        eprintln!(
            "warning: {far} network(s) marked far are unlike {}'s training networks \
             (in_domain < {FAR}): their predictions lean on the base line (FLOPs), not \
             on the graph; fine-tune on a few labelled ones (docs/your-family.md)",
            meta.name
        );
    }
}
