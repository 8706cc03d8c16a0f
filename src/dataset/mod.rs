//! Labelled records and datasets (pipeline stage 3, above [`crate::spaces`], below features).
//!
//! A [`Record`] is one architecture of a benchmark family: its id, its spec (what
//! [`crate::spaces::Space::parse_spec`] reads), optionally the ONNX file it was exported to,
//! its targets by name (`val_acc_ep108`, `cifar10_test_ep200`, ...) and the proxy scores the
//! benchmark published. A [`Dataset`] is a list of records plus the [`Issue`]s met while
//! loading them (lines skipped, labels missing or not finite): nothing is dropped silently.
//!
//! - [`data_dir`] finds the benchmark data (`--data`, then `NAPE_DATA`, then `../shared/data`),
//!   [`data_file`] names a missing file with the path expected and how to get it;
//! - [`load`] reads NAS-Bench-101, NAS-Bench-201 and NAS-Bench-Suite-Zero's records;
//! - [`Dataset::split`] and [`Dataset::sample`] are deterministic given a seed;
//! - [`write_manifest`] / [`read_manifest`] keep records as JSONL (written atomically);
//! - [`cache`] stores featurised graphs on disk so later stages never re-parse.

pub mod cache;
pub mod images;
pub mod labels;
pub mod load;

pub use cache::{Cache, CachedGraph, CgCache, Entry};
pub use load::{load_naslib_zc, load_nb101, load_nb201, load_space, NaslibSpace};

use crate::error::{write_atomic, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the benchmark data folder.
pub const DATA_ENV: &str = "NAPE_DATA";
/// Where the data folder is looked for last, relative to the current directory.
pub const DEFAULT_DATA_DIR: &str = "../shared/data";
/// NAS-Bench-101 labelled cells, under the data folder.
pub const NB101_LABELLED: &str = "nasbench101/nb101_labelled.jsonl";
/// The whole NAS-Bench-101 space (423,624 cells), under the data folder.
pub const NB101_SPACE: &str = "nasbench101/nb101_space_all_423624.tsv.gz";
/// All 15,625 NAS-Bench-201 cells with their accuracies, under the data folder.
pub const NB201_CSV: &str = "nasbench201/nb201_all_15625.csv";
/// NAS-Bench-Suite-Zero records of NAS-Bench-201, under the data folder.
pub const NASLIB_NB201: &str = "naslib_zc/nasbench201.jsonl";
/// NAS-Bench-Suite-Zero records of TransNAS-Bench-101 micro, under the data folder.
pub const NASLIB_TNB_MICRO: &str = "naslib_zc/transbench101_micro.jsonl";

/// The benchmark data folder: `explicit` (`--data DIR`) if given, else `$NAPE_DATA` if set and
/// not empty, else `../shared/data` relative to the current directory. The folder is not
/// checked here; [`data_file`] reports a missing file.
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// Where the data folder came from, for messages.
fn data_dir_origin(dir: &Path) -> String {
    let env = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty());
    match env {
        Some(v) if Path::new(&v) == dir => format!("from ${DATA_ENV}"),
        _ if dir == Path::new(DEFAULT_DATA_DIR) => {
            format!("the default, relative to {}", cwd_display())
        }
        _ => "from --data".into(),
    }
}

fn cwd_display() -> String {
    std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into())
}

/// `dir/rel` if it is a file; otherwise [`Error::MissingData`] naming the exact path, where
/// the folder came from and how to provide it. `what` names the file for people.
pub fn data_file(dir: &Path, rel: &str, what: &str) -> Result<PathBuf> {
    let path = dir.join(rel);
    if path.is_file() {
        return Ok(path);
    }
    let folder = if dir.is_dir() { "" } else { " (the data folder itself does not exist)" };
    Err(Error::MissingData {
        what: what.into(),
        path,
        hint: format!(
            "; data folder {} ({}){folder}. Point --data DIR or ${DATA_ENV} at the folder that \
             holds nasbench101/, nasbench201/ and naslib_zc/ (its README.md and each SOURCE.md \
             say where every file comes from)",
            dir.display(),
            data_dir_origin(dir)
        ),
    })
}

/// One labelled architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Id within the family (NB-101 hash, NB-201 index, TNB-101 cell code).
    pub id: String,
    /// The family (`nb101`, `nb201`, `tnb-micro`).
    pub family: String,
    /// The architecture spec, as the family's space parses it.
    pub spec: String,
    /// The ONNX file of the network, when there is one (relative to the manifest's folder in
    /// manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Labels by name; every value is finite.
    #[serde(default)]
    pub targets: BTreeMap<String, f64>,
    /// Published proxy scores by name; every value is finite.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxies: BTreeMap<String, f64>,
}

impl Record {
    /// A record with no labels.
    pub fn new(
        id: impl Into<String>,
        family: impl Into<String>,
        spec: impl Into<String>,
    ) -> Record {
        Record {
            id: id.into(),
            family: family.into(),
            spec: spec.into(),
            file: None,
            targets: BTreeMap::new(),
            proxies: BTreeMap::new(),
        }
    }

    /// The target `name`, if present.
    pub fn target(&self, name: &str) -> Option<f64> {
        self.targets.get(name).copied()
    }
}

/// Something wrong with one line or label of a data file; the loaders collect these instead
/// of silently dropping or using bad values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when not tied to a line).
    pub line: usize,
    /// The record's id, when known.
    pub id: String,
    /// What is wrong and what was done (skipped the record, left the label out).
    pub msg: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.as_os_str().is_empty() {
            write!(f, "{}:{}: ", self.path.display(), self.line)?;
        }
        write!(f, "{}: {}", self.id, self.msg)
    }
}

/// Records of one family and the issues met loading them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// The family.
    pub family: String,
    /// The records, in file order.
    pub records: Vec<Record>,
    /// Lines skipped and labels left out.
    pub issues: Vec<Issue>,
}

impl Dataset {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.id == id)
    }

    /// Only the records that carry `target`; each one left out becomes an [`Issue`].
    pub fn require(&self, target: &str) -> Dataset {
        let mut out = Dataset {
            family: self.family.clone(),
            issues: self.issues.clone(),
            ..Default::default()
        };
        for r in &self.records {
            if r.targets.contains_key(target) {
                out.records.push(r.clone());
            } else {
                out.issues.push(Issue {
                    path: PathBuf::new(),
                    line: 0,
                    id: r.id.clone(),
                    msg: format!("no '{target}' label: left out"),
                });
            }
        }
        out
    }

    /// The values of `target`, in record order (records without it are skipped).
    pub fn target_values(&self, target: &str) -> Vec<f64> {
        self.records.iter().filter_map(|r| r.target(target)).collect()
    }

    /// Adds the targets and proxies of `other`'s records to the records of the same spec;
    /// returns how many records were joined. Specs of `other` with no match become issues.
    pub fn merge_by_spec(&mut self, other: &Dataset) -> usize {
        let index: BTreeMap<String, usize> =
            self.records.iter().enumerate().map(|(i, r)| (r.spec.clone(), i)).collect();
        let mut joined = 0;
        let mut issues = Vec::new();
        for o in &other.records {
            match index.get(o.spec.as_str()) {
                Some(&i) => {
                    let r = &mut self.records[i];
                    r.targets.extend(o.targets.iter().map(|(k, v)| (k.clone(), *v)));
                    r.proxies.extend(o.proxies.iter().map(|(k, v)| (k.clone(), *v)));
                    joined += 1;
                }
                None => issues.push(Issue {
                    path: PathBuf::new(),
                    line: 0,
                    id: o.id.clone(),
                    msg: format!(
                        "spec '{}' is not in the {} records: not joined",
                        o.spec, self.family
                    ),
                }),
            }
        }
        self.issues.extend(issues);
        joined
    }

    /// Record indices ordered by id, then shuffled by `seed` (so the order of the file does
    /// not matter, only the set of ids and the seed): the order [`Dataset::sample`] draws in.
    pub fn shuffled(&self, seed: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.records.len()).collect();
        idx.sort_by(|&a, &b| self.records[a].id.cmp(&self.records[b].id).then(a.cmp(&b)));
        SplitMix64(seed).shuffle(&mut idx);
        idx
    }

    fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset {
            family: self.family.clone(),
            records: idx.iter().map(|&i| self.records[i].clone()).collect(),
            issues: Vec::new(),
        }
    }

    /// Splits the records into parts of the given fractions (positive, summing to 1), the
    /// same way for the same ids and seed. Part `k` ends at `round(n * (f_0 + ... + f_k))`.
    pub fn split(&self, seed: u64, fractions: &[f64]) -> Result<Vec<Dataset>> {
        let sum: f64 = fractions.iter().sum();
        if fractions.is_empty()
            || fractions.iter().any(|f| f.is_nan() || *f <= 0.0)
            || (sum - 1.0).abs() > 1e-6
        {
            return Err(Error::Usage(format!(
                "split fractions {fractions:?} must be positive and sum to 1"
            )));
        }
        let idx = self.shuffled(seed);
        let n = idx.len();
        let mut parts = Vec::with_capacity(fractions.len());
        let (mut start, mut acc) = (0usize, 0.0f64);
        for (k, f) in fractions.iter().enumerate() {
            acc += f;
            let end =
                if k + 1 == fractions.len() { n } else { ((n as f64) * acc).round() as usize };
            let end = end.clamp(start, n);
            parts.push(self.subset(&idx[start..end]));
            start = end;
        }
        Ok(parts)
    }

    /// `n` records drawn without replacement by `seed` (all of them when `n >= len`), in
    /// drawing order.
    pub fn sample(&self, n: usize, seed: u64) -> Dataset {
        let idx = self.shuffled(seed);
        self.subset(&idx[..n.min(idx.len())])
    }
}

/// splitmix64: a small, seedable, portable generator (the same numbers on every platform).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Shuffles `v` in place (Fisher-Yates from the back: every permutation equally likely).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    /// Draws the first `k` places of `v` (Fisher-Yates from the front, stopped after `k`):
    /// `v[..k]` is then a uniform random ordered sample of `v`, and the whole of `v` a uniform
    /// permutation when `k >= v.len()`.
    pub fn shuffle_prefix<T>(&mut self, v: &mut [T], k: usize) {
        let n = v.len();
        for i in 0..k.min(n) {
            let j = i + (self.next() % (n - i) as u64) as usize;
            v.swap(i, j);
        }
    }
}

/// Writes records as JSONL (one [`Record`] per line), atomically.
pub fn write_manifest(path: &Path, records: &[Record]) -> Result<()> {
    let mut out = Vec::with_capacity(records.len() * 256);
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(|e| Error::BadData {
            path: path.to_path_buf(),
            line: 0,
            msg: format!("record '{}' cannot be written: {e}", r.id),
        })?;
        out.push(b'\n');
    }
    write_atomic(path, &out)
}

/// Reads a JSONL manifest written by [`write_manifest`]. Blank lines are skipped; a malformed
/// line is [`Error::BadData`] with its number.
pub fn read_manifest(path: &Path) -> Result<Vec<Record>> {
    let text = read_text(path, "manifest")?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(line).map_err(|e| Error::BadData {
            path: path.to_path_buf(),
            line: i + 1,
            msg: format!("not a manifest record: {e}"),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Reads a text file; a missing one is [`Error::MissingData`] called `what`.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingData { what: what.into(), path: path.to_path_buf(), hint: String::new() }
        } else {
            Error::io(path, e)
        }
    })?;
    String::from_utf8(bytes).map_err(|e| Error::BadData {
        path: path.to_path_buf(),
        line: 0,
        msg: format!("not UTF-8 text ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_the_seeded_fisher_yates_the_splits_were_drawn_with() {
        // the two loops every seeded draw used before they became methods: the splits,
        // samples and folds of saved models depend on these exact permutations
        for (n, k, seed) in [(0usize, 0usize, 1u64), (1, 1, 2), (7, 3, 3), (50, 50, 4), (50, 80, 5)]
        {
            let mut back: Vec<usize> = (0..n).collect();
            let mut rng = SplitMix64(seed);
            for i in (1..n).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                back.swap(i, j);
            }
            let mut v: Vec<usize> = (0..n).collect();
            SplitMix64(seed).shuffle(&mut v);
            assert_eq!(v, back);

            let mut front: Vec<usize> = (0..n).collect();
            let mut rng = SplitMix64(seed);
            for i in 0..k.min(n) {
                let j = i + (rng.next() % (n - i) as u64) as usize;
                front.swap(i, j);
            }
            let mut v: Vec<usize> = (0..n).collect();
            SplitMix64(seed).shuffle_prefix(&mut v, k);
            assert_eq!(v, front);
            v.sort_unstable();
            assert_eq!(v, (0..n).collect::<Vec<_>>());
        }
    }

    fn ds(n: usize) -> Dataset {
        Dataset {
            family: "t".into(),
            records: (0..n)
                .map(|i| {
                    let mut r = Record::new(format!("{i:04}"), "t", format!("s{i}"));
                    if i % 3 != 0 {
                        r.targets.insert("acc".into(), i as f64);
                    }
                    r
                })
                .collect(),
            issues: Vec::new(),
        }
    }

    #[test]
    fn data_dir_prefers_the_explicit_folder() {
        assert_eq!(data_dir(Some(Path::new("/x/y"))), PathBuf::from("/x/y"));
    }

    #[test]
    fn missing_file_names_the_path_and_the_way_out() {
        let e = data_file(Path::new("/no/such/dir"), NB101_LABELLED, "NAS-Bench-101 labels")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/no/such/dir/nasbench101/nb101_labelled.jsonl"), "{msg}");
        assert!(msg.contains("NAPE_DATA"), "{msg}");
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn splits_are_deterministic_disjoint_and_order_free() {
        let d = ds(101);
        let a = d.split(7, &[0.8, 0.1, 0.1]).unwrap();
        let b = d.split(7, &[0.8, 0.1, 0.1]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![81, 10, 10]);
        let mut ids: Vec<String> =
            a.iter().flat_map(|p| p.records.iter().map(|r| r.id.clone())).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 101);
        // reversing the file order changes nothing
        let mut rev = d.clone();
        rev.records.reverse();
        assert_eq!(rev.split(7, &[0.8, 0.1, 0.1]).unwrap(), a);
        // another seed, another split
        assert_ne!(d.split(8, &[0.8, 0.1, 0.1]).unwrap(), a);
        assert!(d.split(7, &[0.5, 0.6]).is_err());
        assert!(d.split(7, &[]).is_err());
        assert_eq!(d.sample(5, 3), d.sample(5, 3));
        assert_eq!(d.sample(500, 3).len(), 101);
    }

    #[test]
    fn require_reports_what_it_leaves_out() {
        let d = ds(9).require("acc");
        assert_eq!(d.len(), 6);
        assert_eq!(d.issues.len(), 3);
        assert!(d.issues[0].msg.contains("acc"));
    }

    #[test]
    fn manifest_round_trips_and_bad_lines_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let mut d = ds(4);
        d.records[1].file = Some(PathBuf::from("x.onnx"));
        d.records[2].proxies.insert("synflow".into(), 1.5);
        write_manifest(&p, &d.records).unwrap();
        assert_eq!(read_manifest(&p).unwrap(), d.records);
        std::fs::write(&p, "{\"id\":\"a\",\"family\":\"t\",\"spec\":\"s\"}\n{oops\n").unwrap();
        let e = read_manifest(&p).unwrap_err();
        assert!(matches!(e, Error::BadData { line: 2, .. }), "{e}");
        let e = read_manifest(&dir.path().join("none.jsonl")).unwrap_err();
        assert_eq!(e.exit_code(), 3);
    }
}
