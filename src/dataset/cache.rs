//! An on-disk cache of featurised graphs, so later stages never re-parse 30,000 networks.
//!
//! One gzip-compressed JSONL file per (family, nape version, [`CG_SCHEMA_VERSION`], tag),
//! under `DIR/<family>/cg-schema<S>-nape<V>-<tag>.jsonl.gz`. The first line is a header with
//! that key; each following line is one [`Entry`]: the record id, its spec and a value. The
//! value type is the caller's: [`CgCache`] stores a [`CachedGraph`] (the graph's [`Summary`]
//! and, when asked for, the whole graph as its [`CgJson`] view, which [`CachedGraph::cg`] turns
//! back into a [`Cg`]); the feature stage stores its features under its own `tag`. The key is
//! in the file name, so a new nape version, a new CG layout or a new featuriser (a new `tag`,
//! e.g. `features-v2`) starts a new file and the old one is simply not read: the cache rebuilds
//! itself. Files are written atomically; entries are serialised, compressed and parsed in
//! parallel.

use super::{Error, Result};
use crate::error::write_atomic;
use crate::graph::{Cg, CgJson, OpKind, OpNode, Summary, TensorEdge, CG_SCHEMA_VERSION};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The version of nape that writes caches.
pub const NAPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A digest of the code that reads an ONNX file into its graph, features and proxy scores
/// (`build.rs`). The caches of users' files carry it in their tag: a file is featurised again
/// by a nape that reads it differently (a count fixed, an op newly read), which the version
/// alone does not say. The caches of generated families do not: their networks are checked
/// by the golden files, and the NB-101 proxy cache in `data/` took hours.
pub const READER_DIGEST: &str = env!("NAPE_READER_DIGEST");

/// The key a cache file is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Family of the records.
    pub family: String,
    /// nape version that wrote it.
    pub nape_version: String,
    /// [`CG_SCHEMA_VERSION`] of the graphs.
    pub cg_schema_version: u32,
    /// What else the entries depend on (a featuriser name and version); `cg` for plain graphs.
    pub tag: String,
}

/// One cached graph: its totals and, when asked for, the whole graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedGraph {
    /// Totals of the graph.
    pub summary: Summary,
    /// The whole graph, when it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<CgJson>,
}

impl CachedGraph {
    /// An entry for `cg`; `keep_graph` stores the whole graph, not just its summary.
    pub fn new(cg: &Cg, keep_graph: bool) -> CachedGraph {
        CachedGraph { summary: cg.summary(), graph: keep_graph.then(|| cg.to_json()) }
    }

    /// The stored graph as a [`Cg`] (node order and indices as when it was stored).
    pub fn cg(&self) -> Option<Cg> {
        self.graph.as_ref().map(cg_from_json)
    }
}

/// Rebuilds a [`Cg`] from its JSON view.
pub fn cg_from_json(j: &CgJson) -> Cg {
    let mut cg = Cg::new(j.source.clone());
    let ids: Vec<_> = j
        .nodes
        .iter()
        .map(|n| {
            let out_shapes = if n.kind == OpKind::Output {
                Vec::new()
            } else if !n.out_shapes.is_empty() {
                n.out_shapes.clone()
            } else {
                vec![n.out_shape.clone()]
            };
            cg.graph.add_node(OpNode {
                kind: n.kind.clone(),
                name: n.name.clone(),
                onnx_op: n.onnx_op.clone(),
                attrs: n.attrs.clone(),
                in_shapes: n.in_shapes.clone(),
                out_shapes,
                params: n.params,
                macs: n.macs,
                flops: n.flops,
                act_slots: Vec::new(),
                operands: Vec::new(),
                onnx_attrs: Default::default(),
                bounded: false,
            })
        })
        .collect();
    for e in &j.edges {
        if let (Some(&s), Some(&t)) = (ids.get(e.from), ids.get(e.to)) {
            cg.graph.add_edge(
                s,
                t,
                TensorEdge {
                    src_slot: e.src_slot,
                    dst_slot: e.dst_slot,
                    shape: e.shape.clone(),
                    name: e.tensor.clone(),
                },
            );
        }
    }
    cg
}

/// One cached value: the record it belongs to, the spec it was built from, the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<T> {
    /// Record id.
    pub id: String,
    /// The spec it was built from (a changed spec invalidates the entry).
    pub spec: String,
    /// The cached value.
    pub value: T,
}

/// The cache of one family under one key, holding values of type `T` (a [`CachedGraph`] for
/// [`CgCache`]; later stages store their own features under their own `tag`).
#[derive(Debug, Clone)]
pub struct Cache<T> {
    path: PathBuf,
    key: CacheKey,
    entries: BTreeMap<String, Entry<T>>,
    dirty: bool,
}

/// A cache of graphs ([`CachedGraph`]).
pub type CgCache = Cache<CachedGraph>;

/// Entries serialised and compressed per parallel task when saving.
const CHUNK: usize = 256;

impl<T: Serialize + DeserializeOwned + Send + Sync> Cache<T> {
    /// The file a cache of `family` under `tag` lives in, below `dir`.
    pub fn path_for(dir: &Path, family: &str, tag: &str) -> PathBuf {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        dir.join(family)
            .join(format!("cg-schema{CG_SCHEMA_VERSION}-nape{NAPE_VERSION}-{tag}.jsonl.gz"))
    }

    /// Opens (or starts) the cache of `family` under `tag` below `dir`. A file written under
    /// another key is ignored (the cache starts empty and overwrites it on save); a corrupt
    /// one is [`Error::BadData`].
    pub fn open(dir: &Path, family: &str, tag: &str) -> Result<Cache<T>> {
        let path = Cache::<T>::path_for(dir, family, tag);
        let key = CacheKey {
            family: family.to_string(),
            nape_version: NAPE_VERSION.to_string(),
            cg_schema_version: CG_SCHEMA_VERSION,
            tag: tag.to_string(),
        };
        let mut cache = Cache { path, key, entries: BTreeMap::new(), dirty: false };
        let file = match std::fs::File::open(&cache.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cache),
            Err(e) => return Err(Error::io(&cache.path, e)),
        };
        let bad = |line: usize, msg: String| Error::BadData { path: cache.path.clone(), line, msg };
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))
            .read_to_string(&mut text)
            .map_err(|e| bad(0, format!("not a readable gzip cache ({e})")))?;
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let k: CacheKey = serde_json::from_str(header)
            .map_err(|e| bad(1, format!("not a cache header ({e})")))?;
        if k != cache.key {
            return Ok(cache);
        }
        let rest: Vec<&str> = lines.collect();
        let parsed: Vec<Entry<T>> = rest
            .par_iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| bad(i + 2, format!("not a cache entry ({e})")))
            })
            .collect::<Result<_>>()?;
        cache.entries = parsed.into_iter().map(|e| (e.id.clone(), e)).collect();
        Ok(cache)
    }

    /// The file this cache reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key it is valid for.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `id` if it was built from `spec`.
    pub fn get(&self, id: &str, spec: &str) -> Option<&T> {
        self.entries.get(id).filter(|e| e.spec == spec).map(|e| &e.value)
    }

    /// Adds or replaces the value of `id`.
    pub fn insert(&mut self, id: &str, spec: &str, value: T) {
        self.entries
            .insert(id.to_string(), Entry { id: id.to_string(), spec: spec.to_string(), value });
        self.dirty = true;
    }

    /// All entries, by id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.values()
    }

    /// Builds (in parallel) the values of the `(id, spec)` items the cache lacks, adds them,
    /// and returns how many were built. The first error stops it.
    pub fn fill<F>(&mut self, items: &[(String, String)], build: F) -> Result<usize>
    where
        F: Fn(&str, &str) -> Result<T> + Sync,
    {
        let missing: Vec<&(String, String)> =
            items.iter().filter(|(id, spec)| self.get(id, spec).is_none()).collect();
        let built: Vec<(String, String, T)> = missing
            .par_iter()
            .map(|(id, spec)| build(id, spec).map(|v| (id.clone(), spec.clone(), v)))
            .collect::<Result<_>>()?;
        let n = built.len();
        for (id, spec, v) in built {
            self.insert(&id, &spec, v);
        }
        Ok(n)
    }

    /// Writes the cache (atomically) if anything changed. Entries are serialised and
    /// compressed in parallel, as concatenated gzip members.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.path.clone();
        let ser = |e: serde_json::Error| Error::BadData {
            path: path.clone(),
            line: 0,
            msg: format!("cannot serialise ({e})"),
        };
        let io = |e: std::io::Error| Error::io(&path, e);
        let mut header = serde_json::to_vec(&self.key).map_err(ser)?;
        header.push(b'\n');
        let entries: Vec<&Entry<T>> = self.entries.values().collect();
        let members: Vec<Vec<u8>> = entries
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut text = Vec::with_capacity(chunk.len() * 1024);
                for e in chunk {
                    serde_json::to_writer(&mut text, e).map_err(ser)?;
                    text.push(b'\n');
                }
                gzip(&text).map_err(io)
            })
            .collect::<Result<_>>()?;
        let mut bytes = gzip(&header).map_err(io)?;
        for m in members {
            bytes.extend_from_slice(&m);
        }
        write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::write::Weights;
    use crate::onnx::{from_proto, ImportOptions};
    use crate::spaces::nb201::{Arch, Dataset};

    fn graph() -> Cg {
        let a = Arch::parse("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|").unwrap();
        let m = a.build(Dataset::Cifar10, Weights::Inputs).unwrap();
        from_proto(&m.model, "t", &ImportOptions::default()).unwrap()
    }

    #[test]
    fn graphs_round_trip_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cg = graph();
        let mut c = CgCache::open(dir.path(), "nb201", "cg").unwrap();
        assert!(c.is_empty());
        c.insert("7", "spec7", CachedGraph::new(&cg, true));
        c.insert("8", "spec8", CachedGraph::new(&cg, false));
        c.save().unwrap();
        let c = CgCache::open(dir.path(), "nb201", "cg").unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.get("7", "other spec").is_none());
        let e = c.get("7", "spec7").unwrap();
        assert_eq!(e.summary, cg.summary());
        let back = e.cg().unwrap();
        assert_eq!(back.to_json(), cg.to_json());
        back.validate().unwrap();
        assert!(c.get("8", "spec8").unwrap().graph.is_none());
        // another tag is another cache
        assert!(CgCache::open(dir.path(), "nb201", "features-v2").unwrap().is_empty());
    }

    #[test]
    fn a_stale_header_starts_afresh_and_garbage_is_bad_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = CgCache::path_for(dir.path(), "nb101", "cg");
        let mut c = CgCache::open(dir.path(), "nb101", "cg").unwrap();
        let n = c
            .fill(&[("a".into(), "s".into()), ("b".into(), "s".into())], |_, _| {
                Ok(CachedGraph::new(&graph(), false))
            })
            .unwrap();
        assert_eq!(n, 2);
        c.save().unwrap();
        assert_eq!(CgCache::open(dir.path(), "nb101", "cg").unwrap().len(), 2);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"family\":\"nb101\",\"nape_version\":\"0.0.0\",\"cg_schema_version\":0,\"tag\":\"cg\"}\n{}\n").unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        assert!(CgCache::open(dir.path(), "nb101", "cg").unwrap().is_empty());
        std::fs::write(&path, b"not gzip").unwrap();
        assert_eq!(CgCache::open(dir.path(), "nb101", "cg").unwrap_err().exit_code(), 3);
    }
}
