//! Helpers shared by subcommands: output formats, input-shape parsing, file collection.

use std::path::{Path, PathBuf};

/// How a command writes its data to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// A human-readable table.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line, streamed.
    Jsonl,
    /// Comma-separated values with a header.
    Csv,
}

/// A `--input-shape` value such as `1,3,32,32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeArg(pub Vec<usize>);

impl std::str::FromStr for ShapeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<ShapeArg, String> {
        parse_shape(s).map(ShapeArg)
    }
}

/// A `--dim NAME=N` value: a symbolic dim's value by its name in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimArg(pub String, pub usize);

impl std::str::FromStr for DimArg {
    type Err = String;
    fn from_str(s: &str) -> Result<DimArg, String> {
        let bad = || {
            format!("'{s}' is not NAME=N: give a dim's name in the file and a positive size, like sequence=128")
        };
        let (name, v) = s.rsplit_once('=').ok_or_else(bad)?;
        match v.trim().parse::<usize>() {
            Ok(v) if v > 0 && !name.trim().is_empty() => Ok(DimArg(name.trim().to_string(), v)),
            _ => Err(bad()),
        }
    }
}

/// How the data inputs of the files are bound: the dims a file leaves symbolic, other than a
/// leading batch, are refused unless one of these binds them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShapeArgs {
    /// Bind the (first) data input to this shape, e.g. 1,3,32,32 (default: the model's, a
    /// symbolic batch as 1).
    #[arg(long)]
    pub input_shape: Option<ShapeArg>,
    /// Bind a dim the file leaves symbolic by its name, in every data input, e.g. --dim
    /// height=224 --dim width=224 (repeatable).
    #[arg(long = "dim", value_name = "NAME=N")]
    pub dims: Vec<DimArg>,
}

impl ShapeArgs {
    /// Import options with these bindings.
    pub fn options(&self) -> crate::onnx::ImportOptions {
        crate::onnx::ImportOptions {
            input_shape: self.input_shape.as_ref().map(|s| s.0.clone()),
            dims: self.dims.iter().map(|d| (d.0.clone(), d.1)).collect(),
            ..Default::default()
        }
    }
}

/// Parses `1,3,32,32` (or `1x3x32x32`) into a shape.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    let dims: Result<Vec<usize>, _> =
        s.split([',', 'x']).map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&x| x > 0) => Ok(d),
        _ => Err(format!("'{s}' is not a shape: give positive integers like 1,3,32,32")),
    }
}

/// Expands files and folders (recursively, `.onnx` files, sorted) into a list of files.
/// Paths that do not exist are kept so the caller reports them.
pub fn collect_onnx_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found);
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("onnx")) {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse() {
        assert_eq!(parse_shape("1,3,32,32").unwrap(), vec![1, 3, 32, 32]);
        assert_eq!(parse_shape("1x3x224x224").unwrap(), vec![1, 3, 224, 224]);
        assert!(parse_shape("1,0").is_err());
        assert!(parse_shape("a,b").is_err());
        assert!(parse_shape("").is_err());
    }
}
