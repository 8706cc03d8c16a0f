//! A user's own labelled networks (`--labels FILE`): a CSV with a `file` column and one or more
//! numeric target columns, or the JSONL manifest `nape export` writes. Each row becomes a
//! [`Record`] whose `file` is the ONNX path (relative paths are relative to the labels file's
//! folder) and whose one target is the column asked for.
//!
//! Everything wrong with the file is an error naming the labels file and the line: a missing
//! target column, a label that is not a finite number, two rows of the same network file, a
//! network file that does not exist, fewer than [`MIN_ROWS`] rows. Whether each network parses
//! is decided later, by the stage that reads it (a file that does not parse is skipped there
//! and reported, not here).

use super::{read_manifest, read_text, Dataset, Record};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fewest labelled rows any flow accepts.
pub const MIN_ROWS: usize = 3;

/// A labels file read for one target.
#[derive(Debug, Clone)]
pub struct Labels {
    /// The labels file.
    pub path: PathBuf,
    /// The target column.
    pub target: String,
    /// The rows: `id` is the `file` field as written, `file` the resolved path, `targets`
    /// holds the one target.
    pub records: Vec<Record>,
}

impl Labels {
    /// The family name these rows go by (`labels:<file stem>`).
    pub fn family(&self) -> String {
        let stem = self.path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
        format!("labels:{stem}")
    }

    /// The rows as a [`Dataset`].
    pub fn dataset(&self) -> Dataset {
        Dataset { family: self.family(), records: self.records.clone(), issues: Vec::new() }
    }
}

/// One row before validation: its 1-based line, the `file` field, the target columns.
struct Row {
    line: usize,
    file: String,
    values: BTreeMap<String, String>,
}

/// Reads `path` (CSV, or JSONL when it ends in `.jsonl`/`.json`) for `target` (default: the
/// only numeric column besides `file`).
pub fn read_labels(path: &Path, target: Option<&str>) -> Result<Labels> {
    let is_jsonl = matches!(path.extension().and_then(|e| e.to_str()), Some("jsonl" | "json"));
    let (columns, rows) = if is_jsonl { jsonl_rows(path)? } else { csv_rows(path)? };
    let bad = |line: usize, msg: String| Error::BadData { path: path.to_path_buf(), line, msg };
    let target = match target {
        Some(t) if columns.iter().any(|c| c == t) => t.to_string(),
        Some(t) => {
            return Err(Error::Usage(format!(
                "{}: no target column '{t}' (columns: {})",
                path.display(),
                columns.join(", ")
            )))
        }
        None => default_column(path, &columns, &rows)?,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut seen: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let raw = row.values.get(&target).map(|s| s.trim()).unwrap_or("");
        let value: f64 = raw.parse().map_err(|_| {
            bad(row.line, format!("{}: label {target} = '{raw}' is not a number", row.file))
        })?;
        if !value.is_finite() {
            return Err(bad(
                row.line,
                format!("{}: label {target} = {raw} is not finite", row.file),
            ));
        }
        let file = base.join(&row.file);
        if !file.is_file() {
            return Err(Error::MissingData {
                what: format!("network of {}:{}", path.display(), row.line),
                path: file,
                hint: String::new(),
            });
        }
        let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if let Some(first) = seen.insert(key, row.line) {
            return Err(bad(
                row.line,
                format!("{}: the same network file as line {first} (duplicate row)", row.file),
            ));
        }
        let mut r = Record::new(row.file.clone(), "labels", "");
        r.file = Some(file);
        r.targets.insert(target.clone(), value);
        records.push(r);
    }
    if records.len() < MIN_ROWS {
        return Err(bad(
            0,
            format!("{} labelled rows; at least {MIN_ROWS} are needed", records.len()),
        ));
    }
    Ok(Labels { path: path.to_path_buf(), target, records })
}

/// The only column (besides `file`) whose every value parses as a number.
fn default_column(path: &Path, columns: &[String], rows: &[Row]) -> Result<String> {
    let numeric: Vec<&String> = columns
        .iter()
        .filter(|c| {
            rows.iter().all(|r| r.values.get(*c).is_some_and(|v| v.trim().parse::<f64>().is_ok()))
        })
        .collect();
    match numeric.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::Usage(format!(
            "{}: no numeric target column besides 'file' (columns: {})",
            path.display(),
            columns.join(", ")
        ))),
        many => Err(Error::Usage(format!(
            "{}: several numeric columns ({}): choose one with --target",
            path.display(),
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn csv_rows(path: &Path) -> Result<(Vec<String>, Vec<Row>)> {
    let text = read_text(path, "labels file")?;
    let bad = |line: usize, msg: String| Error::BadData { path: path.to_path_buf(), line, msg };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((hl, header)) = lines.next() else {
        return Err(bad(1, "empty labels file (expected a header with a 'file' column)".into()));
    };
    let header: Vec<String> = split_csv(header)
        .map_err(|m| bad(hl + 1, m))?
        .into_iter()
        .map(|s| s.trim().into())
        .collect();
    let Some(fcol) = header.iter().position(|h| h == "file") else {
        return Err(bad(hl + 1, format!("no 'file' column in the header ({})", header.join(", "))));
    };
    let mut rows = Vec::new();
    for (i, line) in lines {
        let fields = split_csv(line).map_err(|m| bad(i + 1, m))?;
        if fields.len() != header.len() {
            return Err(bad(
                i + 1,
                format!("{} fields where the header has {}", fields.len(), header.len()),
            ));
        }
        let file = fields[fcol].trim().to_string();
        if file.is_empty() {
            return Err(bad(i + 1, "empty 'file' field".into()));
        }
        let values = header
            .iter()
            .zip(fields)
            .enumerate()
            .filter(|(c, _)| *c != fcol)
            .map(|(_, (h, v))| (h.clone(), v))
            .collect();
        rows.push(Row { line: i + 1, file, values });
    }
    let columns = header.into_iter().filter(|h| h != "file").collect();
    Ok((columns, rows))
}

/// Splits one CSV line (RFC 4180 quoting: `"a, b"`, `""` for a quote inside quotes).
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.trim().is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(field);
    Ok(out)
}

fn jsonl_rows(path: &Path) -> Result<(Vec<String>, Vec<Row>)> {
    let records = read_manifest(path)?;
    let text = read_text(path, "labels file")?;
    // the manifest's non-blank lines, in order, give each record its line number
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::with_capacity(records.len());
    for (r, &line) in records.into_iter().zip(&lines) {
        let Some(file) = r.file else {
            return Err(Error::BadData {
                path: path.to_path_buf(),
                line,
                msg: format!("record '{}' has no 'file' (export with nape export)", r.id),
            });
        };
        for k in r.targets.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        let values = r.targets.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        rows.push(Row { line, file: file.to_string_lossy().into_owned(), values });
    }
    columns.sort();
    Ok((columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(csv: &str, files: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"onnx").unwrap();
        }
        let path = dir.path().join("labels.csv");
        std::fs::write(&path, csv).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_relative_files_and_picks_the_only_numeric_column() {
        let (_d, p) = setup(
            "file,top1,note\na.onnx,71.5,x\n\"sub/b, c.onnx\",80,\"y, z\"\n\nc.onnx,1e1,w\n",
            &["a.onnx", "sub/b, c.onnx", "c.onnx"],
        );
        let l = read_labels(&p, None).unwrap();
        assert_eq!(l.target, "top1");
        assert_eq!(l.family(), "labels:labels");
        let v: Vec<f64> = l.records.iter().map(|r| r.targets["top1"]).collect();
        assert_eq!(v, [71.5, 80.0, 10.0]);
        assert_eq!(l.records[1].id, "sub/b, c.onnx");
        assert!(l.records[1].file.as_ref().unwrap().is_file());
    }

    #[test]
    fn every_bad_input_names_the_line_and_file() {
        let files = ["a.onnx", "b.onnx", "c.onnx"];
        let err = |csv: &str, t: Option<&str>| {
            let (_d, p) = setup(csv, &files);
            read_labels(&p, t).unwrap_err()
        };
        let e = err("file,acc\na.onnx,1\nb.onnx,nan\nc.onnx,2\n", Some("acc"));
        assert!(e.to_string().contains(":3: b.onnx: label acc = nan is not finite"), "{e}");
        assert_eq!(e.exit_code(), 3);
        let e = err("file,acc\na.onnx,1\nb.onnx,high\nc.onnx,2\n", Some("acc"));
        assert!(e.to_string().contains(":3: b.onnx: label acc = 'high' is not a number"), "{e}");
        let e = err("file,acc\na.onnx,1\nb.onnx,2\n./a.onnx,2\n", None);
        assert!(e.to_string().contains(":4: ./a.onnx: the same network file as line 2"), "{e}");
        let e = err("file,acc\na.onnx,1\nmissing.onnx,2\nc.onnx,2\n", None);
        assert!(e.to_string().contains("labels.csv:3") && e.to_string().contains("missing.onnx"));
        assert_eq!(e.exit_code(), 3);
        let e = err("file,acc\na.onnx,1\nb.onnx,2\nc.onnx,2\n", Some("top1"));
        assert!(e.to_string().contains("no target column 'top1' (columns: acc)"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = err("file,acc,loss\na.onnx,1,2\nb.onnx,2,3\nc.onnx,2,1\n", None);
        assert!(e.to_string().contains("several numeric columns (acc, loss)"), "{e}");
        let e = err("file,acc\na.onnx,1\nb.onnx,2\n", None);
        assert!(e.to_string().contains("2 labelled rows; at least 3"), "{e}");
        let e = err("name,acc\na.onnx,1\n", None);
        assert!(e.to_string().contains("no 'file' column"), "{e}");
        let e = err("file,acc\na.onnx,1,3\n", None);
        assert!(e.to_string().contains(":2: 3 fields where the header has 2"), "{e}");
    }

    #[test]
    fn reads_nape_export_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let mut recs = Vec::new();
        for i in 0..3 {
            let f = format!("{i}.onnx");
            std::fs::write(dir.path().join(&f), b"onnx").unwrap();
            let mut r = Record::new(i.to_string(), "nb201", "s");
            r.file = Some(PathBuf::from(f));
            r.targets.insert("cifar10_test_ep200".into(), 90.0 + f64::from(i));
            r.targets.insert("cifar100_test_ep200".into(), 60.0 + f64::from(i));
            recs.push(r);
        }
        let p = dir.path().join("manifest.jsonl");
        crate::dataset::write_manifest(&p, &recs).unwrap();
        assert!(read_labels(&p, None).unwrap_err().to_string().contains("several numeric"));
        let l = read_labels(&p, Some("cifar10_test_ep200")).unwrap();
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.records[2].targets["cifar10_test_ep200"], 92.0);
    }

    #[test]
    fn csv_fields_split_like_rfc_4180() {
        assert_eq!(split_csv(r#"a,"b,c","d""e",,"#).unwrap(), ["a", "b,c", "d\"e", "", ""]);
        assert!(split_csv(r#"a,"b"#).is_err());
    }
}
