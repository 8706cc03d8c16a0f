//! Loaders of the benchmark files in the data folder (see `README.md` and each `SOURCE.md`
//! there). Each returns a [`Dataset`] whose records carry every label the file has, under the
//! file's own names, and whose issues list every record skipped and every label left out.
//!
//! A file that is missing is [`Error::MissingData`]; one that is not what it should be (not
//! JSON, no header, a line without its id or spec fields, no records at all) is
//! [`Error::BadData`] with the line. Within a well-formed file, a record whose spec is invalid
//! is skipped and a label that is missing, `null`, `NaN` or infinite is left out; both are
//! recorded as [`Issue`]s.

use super::{data_file, read_text, Dataset, Issue, Record};
use crate::error::{Error, Result};
use crate::spaces::{nb101, nb201, tnb_micro, Space};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The records of a space with every label and published proxy score the data folder has:
/// NB-101's labelled cells (with their `zc`), NB-201's table joined with NAS-Bench-Suite-Zero's
/// scores of its cells where that file is there (keys `<dataset>_<proxy>`; a warning where it
/// is not), TransNAS-Bench-101 micro's cells from NAS-Bench-Suite-Zero.
pub fn load_space(space: Space, dir: &Path) -> Result<Dataset> {
    match space {
        Space::Nb101 => load_nb101(dir),
        Space::Nb201 => {
            let mut ds = load_nb201(dir)?;
            match load_naslib_zc(dir, NaslibSpace::Nb201) {
                Ok(zc) => {
                    ds.merge_by_spec(&zc);
                }
                Err(e @ Error::MissingData { .. }) => {
                    tracing::warn!("published proxies left out: {e}")
                }
                Err(e) => return Err(e),
            }
            Ok(ds)
        }
        Space::TnbMicro => load_naslib_zc(dir, NaslibSpace::TnbMicro),
    }
}

/// Fields of `nb101_labelled.jsonl` that are not labels.
const NB101_NON_LABELS: &[&str] = &["hash", "matrix", "ops", "sources", "zc", "naslib_tuple"];

/// Loads NAS-Bench-101's labelled cells (`nasbench101/nb101_labelled.jsonl`): id = module
/// hash, spec = `ROWS:OPS`, targets = every numeric field (`val_acc_ep4/12/36/108`,
/// `trainable_parameters`, `training_time_s_ep108`, `naslib_val_accuracy_pct`), proxies =
/// `zc`. All 30,267 records are kept; 30,001 carry `val_acc_ep108` (use
/// [`Dataset::require`]).
pub fn load_nb101(data_dir: &Path) -> Result<Dataset> {
    let path = data_file(data_dir, super::NB101_LABELLED, "NAS-Bench-101 labelled cells")?;
    let text = read_text(&path, "NAS-Bench-101 labelled cells")?;
    let mut ds = Dataset { family: Space::Nb101.name().into(), ..Default::default() };
    for item in jsonl_objects(&text, &path) {
        let (lineno, obj) = item?;
        let bad = |msg: &str| Error::BadData { path: path.clone(), line: lineno, msg: msg.into() };
        let id = obj.get("hash").and_then(Value::as_str).ok_or_else(|| bad("no 'hash' string"))?;
        let matrix = obj
            .get("matrix")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no 'matrix' list"))?
            .iter()
            .map(|row| {
                row.as_array()
                    .map(|r| r.iter().map(|v| v.as_u64().unwrap_or(2).min(2) as u8).collect())
                    .ok_or_else(|| bad("'matrix' is not a list of lists"))
            })
            .collect::<Result<Vec<Vec<u8>>>>()?;
        let ops = obj
            .get("ops")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no 'ops' list"))?
            .iter()
            .map(|v| v.as_str().and_then(nb101::Op::from_name))
            .collect::<Option<Vec<_>>>();
        let cell = match ops.map(|ops| nb101::Cell::new(&matrix, &ops)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                ds.issues.push(issue(&path, lineno, id, &format!("{e}: skipped")));
                continue;
            }
            None => {
                ds.issues.push(issue(&path, lineno, id, "an op is not an NB-101 op name: skipped"));
                continue;
            }
        };
        let mut r = Record::new(id, Space::Nb101.name(), cell.spec());
        for (k, v) in &obj {
            if NB101_NON_LABELS.contains(&k.as_str()) || v.is_string() || v.is_array() {
                continue;
            }
            add_label(&mut r.targets, k, v, &mut ds.issues, &path, lineno, id);
        }
        if let Some(Value::Object(zc)) = obj.get("zc") {
            for (k, v) in zc {
                add_label(&mut r.proxies, k, v, &mut ds.issues, &path, lineno, id);
            }
        }
        ds.records.push(r);
    }
    if ds.records.is_empty() {
        return Err(no_records(path, &ds.issues));
    }
    Ok(ds)
}

/// Loads all NAS-Bench-201 cells (`nasbench201/nb201_all_15625.csv`): id = `index`, spec =
/// `arch_str`, targets = every other column (`cifar10_test_ep200`, ... in %), except the
/// `*_zen` columns, which are proxies.
pub fn load_nb201(data_dir: &Path) -> Result<Dataset> {
    let path = data_file(data_dir, super::NB201_CSV, "NAS-Bench-201 cells")?;
    let text = read_text(&path, "NAS-Bench-201 cells")?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| Error::BadData {
        path: path.clone(),
        line: 1,
        msg: "empty file".into(),
    })?;
    let cols: Vec<String> = split_csv(header);
    let col = |name: &str| {
        cols.iter().position(|c| c == name).ok_or_else(|| Error::BadData {
            path: path.clone(),
            line: 1,
            msg: format!("no '{name}' column in the header"),
        })
    };
    let (c_index, c_arch) = (col("index")?, col("arch_str")?);
    let mut ds = Dataset { family: Space::Nb201.name().into(), ..Default::default() };
    for (i, line) in lines {
        let lineno = i + 1;
        let fields = split_csv(line);
        if fields.len() != cols.len() {
            return Err(Error::BadData {
                path,
                line: lineno,
                msg: format!("{} fields, the header has {}", fields.len(), cols.len()),
            });
        }
        let id = fields[c_index].clone();
        let arch = match nb201::Arch::parse(&fields[c_arch]) {
            Ok(a) => a,
            Err(e) => {
                ds.issues.push(issue(&path, lineno, &id, &format!("{e}: skipped")));
                continue;
            }
        };
        let mut r = Record::new(id.clone(), Space::Nb201.name(), arch.to_string());
        for (k, (name, field)) in cols.iter().zip(&fields).enumerate() {
            if k == c_index || k == c_arch {
                continue;
            }
            let v = match field.trim().parse::<f64>() {
                Ok(v) => Value::from(v),
                Err(_) if field.trim().is_empty() => Value::Null,
                Err(_) => Value::String(field.clone()),
            };
            let v =
                if v.is_f64() && !v.as_f64().is_some_and(f64::is_finite) { Value::Null } else { v };
            let into = if name.ends_with("_zen") { &mut r.proxies } else { &mut r.targets };
            add_label(into, name, &v, &mut ds.issues, &path, lineno, &id);
        }
        ds.records.push(r);
    }
    if ds.records.is_empty() {
        return Err(no_records(path, &ds.issues));
    }
    Ok(ds)
}

/// The NAS-Bench-Suite-Zero files [`load_naslib_zc`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NaslibSpace {
    /// `naslib_zc/nasbench201.jsonl`.
    Nb201,
    /// `naslib_zc/transbench101_micro.jsonl`.
    TnbMicro,
}

/// The data file of a NAS-Bench-Suite-Zero space, what it holds, and nape's family for it.
fn naslib_source(space: NaslibSpace) -> (&'static str, &'static str, Space) {
    match space {
        NaslibSpace::Nb201 => {
            (super::NASLIB_NB201, "NAS-Bench-Suite-Zero NAS-Bench-201 records", Space::Nb201)
        }
        NaslibSpace::TnbMicro => (
            super::NASLIB_TNB_MICRO,
            "NAS-Bench-Suite-Zero TransNAS-Bench-101 micro records",
            Space::TnbMicro,
        ),
    }
}

/// Loads NAS-Bench-Suite-Zero's records of one space: one [`Record`] per architecture, with
/// targets `{dataset}_val_accuracy` and proxies `{dataset}_{proxy}` for every dataset (task)
/// the file has for it. Dataset names are lower-cased, `ImageNet16-120` becomes `imagenet16`.
///
/// NB-201: id and spec = the arch string (NASLib's tuple converted by
/// [`nb201::Arch::from_naslib_tuple`]). TransNAS-Bench-101 micro: id = the cell code
/// (`1_13_302`), spec = the net code (`64-41414-1_13_302`); the tuple lists TransNAS-Bench-101's
/// own op codes (0 zero, 1 identity, 2 conv1x1, 3 conv3x3) in the code's edge order, which the
/// published parameter counts confirm (see [`tnb_micro`]).
pub fn load_naslib_zc(data_dir: &Path, space: NaslibSpace) -> Result<Dataset> {
    let (rel, what, family) = naslib_source(space);
    let path = data_file(data_dir, rel, what)?;
    let text = read_text(&path, what)?;
    let mut ds = Dataset { family: family.name().into(), ..Default::default() };
    let mut by_id: BTreeMap<String, Record> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for item in jsonl_objects(&text, &path) {
        let (lineno, obj) = item?;
        let bad = |msg: &str| Error::BadData { path: path.clone(), line: lineno, msg: msg.into() };
        let arch =
            obj.get("arch").and_then(Value::as_str).ok_or_else(|| bad("no 'arch' string"))?;
        let dataset =
            obj.get("dataset").and_then(Value::as_str).ok_or_else(|| bad("no 'dataset' string"))?;
        let dataset = normalise_dataset(dataset);
        let built = naslib_arch(space, arch, &dataset);
        let (id, spec) = match built {
            Ok(x) => x,
            Err(e) => {
                ds.issues.push(issue(&path, lineno, arch, &format!("{e}: skipped")));
                continue;
            }
        };
        if let Some(first) = seen.insert((id.clone(), dataset.clone()), lineno) {
            ds.issues.push(issue(
                &path,
                lineno,
                &id,
                &format!("{dataset} given again (first on line {first}): this line skipped"),
            ));
            continue;
        }
        let r =
            by_id.entry(id.clone()).or_insert_with(|| Record::new(id.clone(), family.name(), spec));
        let mut add = |to: &mut BTreeMap<String, f64>, key: String, v: &Value| {
            add_label(to, &key, v, &mut ds.issues, &path, lineno, &id)
        };
        add(
            &mut r.targets,
            format!("{dataset}_val_accuracy"),
            obj.get("val_accuracy").unwrap_or(&Value::Null),
        );
        if let Some(Value::Object(zc)) = obj.get("zc") {
            for (k, v) in zc {
                add(&mut r.proxies, format!("{dataset}_{k}"), v);
            }
        }
    }
    ds.records = by_id.into_values().collect();
    if ds.records.is_empty() {
        return Err(no_records(path, &ds.issues));
    }
    Ok(ds)
}

/// The datasets of `transbench101_micro.jsonl` that NASLib trained the cells on itself
/// (NAS-Bench-360's tasks). Their tuples are in NASLib's own convention
/// ([`tnb_micro::Arch::from_naslib_tuple`]), not the benchmark's codes: decoded as codes, their
/// published parameter counts rank against the counts of the cells so named at Spearman 0.07;
/// decoded as NASLib's, at 0.99996 (192 cells each, `tests/spaces_tnb_micro.rs`).
const TNB_NASLIB_TRAINED: [&str; 3] = ["svhn", "scifar100", "ninapro"];

/// A NAS-Bench-Suite-Zero `arch` tuple of `dataset`'s record as (id, spec) in `space`, or why
/// it is not one.
fn naslib_arch(
    space: NaslibSpace,
    arch: &str,
    dataset: &str,
) -> std::result::Result<(String, String), String> {
    let codes: Option<Vec<u8>> = arch
        .trim()
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(|t| t.trim().parse::<u8>().ok())
        .collect();
    let Some(codes) = codes else {
        return Err(format!("arch '{arch}' is not a tuple of small integers"));
    };
    match space {
        NaslibSpace::Nb201 => nb201::Arch::from_naslib_tuple(&codes)
            .map(|a| (a.to_string(), a.to_string()))
            .map_err(|e| e.to_string()),
        NaslibSpace::TnbMicro => if TNB_NASLIB_TRAINED.contains(&dataset) {
            tnb_micro::Arch::from_naslib_tuple(&codes)
        } else {
            tnb_micro::Arch::from_codes(&codes)
        }
        .map(|a| (a.cell_code(), a.to_string()))
        .map_err(|e| e.to_string()),
    }
}

/// `ImageNet16-120` -> `imagenet16`; other names lower-cased.
fn normalise_dataset(d: &str) -> String {
    let l = d.to_ascii_lowercase();
    if l.starts_with("imagenet16") {
        "imagenet16".into()
    } else {
        l
    }
}

/// Parses one JSONL line into an object. Python writes non-finite floats as bare `NaN` and
/// `Infinity`, which are not JSON: those become `null` (and so a reported missing label).
/// The non-empty lines of a JSONL file as JSON objects, with their 1-based line numbers.
fn jsonl_objects<'a>(
    text: &'a str,
    path: &'a Path,
) -> impl Iterator<Item = Result<(usize, Map<String, Value>)>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(move |(i, line)| parse_object(line, path, i + 1).map(|obj| (i + 1, obj)))
}

fn parse_object(line: &str, path: &Path, lineno: usize) -> Result<Map<String, Value>> {
    let parsed =
        serde_json::from_str::<Value>(line).or_else(|e| match nulls_for_non_finite(line) {
            Some(fixed) => serde_json::from_str::<Value>(&fixed),
            None => Err(e),
        });
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::BadData {
            path: path.to_path_buf(),
            line: lineno,
            msg: "not a JSON object".into(),
        }),
        Err(e) => Err(Error::BadData {
            path: path.to_path_buf(),
            line: lineno,
            msg: format!("not JSON ({e})"),
        }),
    }
}

/// `line` with bare `NaN`, `Infinity` and `-Infinity` tokens (outside strings) replaced by
/// `null`; `None` when there is none.
fn nulls_for_non_finite(line: &str) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let (mut in_str, mut escaped, mut changed) = (false, false, false);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push_str("null");
            rest = &rest[t.len()..];
            changed = true;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    changed.then_some(out)
}

/// Adds a finite number under `name`; anything else becomes an issue.
#[allow(clippy::too_many_arguments)]
fn add_label(
    into: &mut BTreeMap<String, f64>,
    name: &str,
    v: &Value,
    issues: &mut Vec<Issue>,
    path: &Path,
    line: usize,
    id: &str,
) {
    match v.as_f64() {
        Some(x) if x.is_finite() => {
            into.insert(name.to_string(), x);
        }
        _ => {
            let what = if v.is_null() {
                "missing or not finite (NaN)".to_string()
            } else {
                format!("not a number ({v})")
            };
            issues.push(issue(path, line, id, &format!("label '{name}' is {what}: left out")));
        }
    }
}

/// The error for a file none of whose records could be used: says why, from the first issue.
fn no_records(path: PathBuf, issues: &[Issue]) -> Error {
    match issues.first() {
        Some(i) => Error::BadData {
            path,
            line: i.line,
            msg: format!(
                "no usable records ({} skipped; the first: '{}': {})",
                issues.len(),
                i.id,
                i.msg
            ),
        },
        None => Error::BadData { path, line: 0, msg: "no records".into() },
    }
}

fn issue(path: &Path, line: usize, id: &str, msg: &str) -> Issue {
    Issue { path: path.to_path_buf(), line, id: id.to_string(), msg: msg.to_string() }
}

/// Splits one CSV line (fields may be double-quoted, with `""` for a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_become_null_outside_strings() {
        assert_eq!(nulls_for_non_finite(r#"{"a": 1}"#), None);
        assert_eq!(
            nulls_for_non_finite(r#"{"a": NaN, "b": "NaN", "c": -Infinity}"#).unwrap(),
            r#"{"a": null, "b": "NaN", "c": null}"#
        );
    }

    #[test]
    fn csv_fields_may_be_quoted() {
        assert_eq!(split_csv(r#"1,"a,b","say ""hi""",3"#), vec!["1", "a,b", "say \"hi\"", "3"]);
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn nb101_labels_that_are_nan_or_missing_are_reported_not_used() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            super::super::NB101_LABELLED,
            concat!(
                r#"{"hash": "h1", "matrix": [[0, 1], [0, 0]], "ops": ["input", "output"], "val_acc_ep108": NaN, "trainable_parameters": 5}"#,
                "\n",
                r#"{"hash": "h2", "matrix": [[0, 1], [0, 0]], "ops": ["input", "bogus"], "val_acc_ep108": 0.5}"#,
                "\n",
                r#"{"hash": "h3", "matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"], "val_acc_ep108": 0.9, "zc": {"synflow": null}}"#,
                "\n"
            ),
        );
        let d = load_nb101(dir.path()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.records[0].target("trainable_parameters"), Some(5.0));
        assert_eq!(d.records[0].target("val_acc_ep108"), None);
        assert_eq!(d.records[1].target("val_acc_ep108"), Some(0.9));
        assert_eq!(d.issues.len(), 3, "{:?}", d.issues);
        assert_eq!(d.require("val_acc_ep108").len(), 1);
        // a line that is not JSON is a malformed file: an error with the line
        write(dir.path(), super::super::NB101_LABELLED, "{\"hash\": \"h1\"}\n{nope\n");
        let e = load_nb101(dir.path()).unwrap_err();
        assert!(matches!(&e, Error::BadData { line: 1, .. }), "{e}");
        write(dir.path(), super::super::NB101_LABELLED, "garbage\n");
        assert_eq!(load_nb101(dir.path()).unwrap_err().exit_code(), 3);
    }

    #[test]
    fn nb201_csv_rows_must_match_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|";
        write(
            dir.path(),
            super::super::NB201_CSV,
            &format!(
                "index,arch_str,cifar10_test_ep200,cifar10_zen\n0,{arch},90.5,\n1,{arch},nan,3\n"
            ),
        );
        let d = load_nb201(dir.path()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.records[0].target("cifar10_test_ep200"), Some(90.5));
        assert_eq!(d.records[1].proxies.get("cifar10_zen"), Some(&3.0));
        assert_eq!(d.issues.len(), 2, "{:?}", d.issues);
        write(dir.path(), super::super::NB201_CSV, &format!("index,arch_str\n0,{arch},1\n"));
        let e = load_nb201(dir.path()).unwrap_err();
        assert!(matches!(&e, Error::BadData { line: 2, .. }), "{e}");
        write(dir.path(), super::super::NB201_CSV, "a,b\n");
        assert!(load_nb201(dir.path()).unwrap_err().to_string().contains("index"));
    }
}
