//! The last try for networks that ran out of memory in a long run: the same command in a fresh
//! process. What a process keeps after many networks (glibc's heap span, mimalloc's reserved
//! arenas, oneDNN's compiled kernels) is address space that the run's cap
//! ([`crate::proxies::memory::cap_address_space`]) counts and nothing uses: in a run over 160
//! ImageNet files at `--batch 8`, 22 networks still failed after the retry alone, and a fresh
//! run scored them (docs/proxies.md "Memory"). Each such network gets a process of its own,
//! which runs the same arguments, told which network to score (a file of its id, so it reads
//! no other file for its digest): the cache serves it everything else, so it scores only that
//! network, saves the cache and prints nothing on stdout; the parent reads the cache again and
//! reports every row.

use super::cached::{Cached, Unkept};
use super::Job;
use crate::dataset::cache::Cache;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Set in the fresh process's environment, to the file of the ids it is to score: it scores
/// them one at a time, writes the cache and returns (the parent prints and writes the rows),
/// and never starts another.
const CHILD: &str = "NAPE_PROXIES_FRESH";

/// Whether this process is the fresh one.
pub(super) fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Whether the network `id` is to be scored here: in the fresh process, one of the ids it was
/// given (all, if their file cannot be read); anywhere else, every network.
pub(super) fn wanted(id: &str) -> bool {
    static IDS: OnceLock<Option<HashSet<String>>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let path = std::env::var_os(CHILD)?;
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.lines().map(str::to_string).collect())
    });
    ids.as_ref().is_none_or(|ids| ids.contains(id))
}

/// Whether the networks of `unkept` may score in a fresh process: on the CPU (a GPU's memory is
/// not the address space this process holds), not from the fresh process itself, and only
/// when they ran beside other networks or lanes (`concurrent`) or after other networks
/// (`scored` in all): one network alone on one lane of a process holds nothing another
/// process would not.
pub(super) fn worth_it(
    unkept: &Unkept,
    scored: usize,
    concurrent: bool,
    device: tch::Device,
) -> bool {
    let after_others = scored > unkept.len();
    device == tch::Device::Cpu && !is_child() && !unkept.is_empty() && (concurrent || after_others)
}

/// Runs this command again for each network of `unkept`, each in a fresh process of its own,
/// which scores it into the cache (its id in a temporary file under `dir`, the cache folder):
/// one process for many would be a long run again (91 networks in one child reached its cap
/// as their parent had). The children's stderr is the user's (progress and warnings); a child
/// that cannot start or fails is a warning, and the parent reports the errors it has.
pub(super) fn rerun(unkept: &Unkept, dir: &Path) {
    let n = unkept.len();
    eprintln!("{n} networks ran out of memory in this process: again, each in a fresh process");
    for id in unkept.keys() {
        if let Err(e) = child(id, dir) {
            return tracing::warn!("no fresh process for {id}: {e}");
        }
    }
}

/// Runs this command again in a fresh process that scores the network `id` alone.
fn child(id: &str, dir: &Path) -> std::io::Result<()> {
    let mut ids = tempfile::NamedTempFile::new_in(dir)?;
    writeln!(ids, "{id}")?;
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(CHILD, ids.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    match status.code() {
        // the child's own errors are the cache's (or out of memory again, reported after)
        Some(_) => tracing::debug!("the fresh process for {id} ended with {status}"),
        None => tracing::warn!("the fresh process for {id} did not finish ({status})"),
    }
    Ok(())
}

/// Drops from `unkept` every proxy the cache now holds a value or an error for (what the fresh
/// process scored), and the networks left with nothing.
pub(super) fn settle(unkept: &mut Unkept, cache: &Cache<Cached>, jobs: &[Job]) {
    for j in jobs {
        if let (Some(errs), Some(c)) = (unkept.get_mut(&j.id), cache.get(&j.id, &j.key)) {
            errs.retain(|key, _| c.lacks(key));
        }
    }
    unkept.retain(|_, errs| !errs.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn what_the_fresh_process_scored_is_no_longer_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache: Cache<Cached> = Cache::open(dir.path(), "files", "t").unwrap();
        let job = |id: &str| {
            let source = super::super::JobSource::File(id.into());
            Job { id: id.into(), key: format!("k{id}"), record: None, source }
        };
        let jobs = [job("a"), job("b"), job("c")];
        let oom = |keys: &[&str]| -> BTreeMap<String, String> {
            keys.iter().map(|k| (k.to_string(), "can't allocate memory".to_string())).collect()
        };
        let mut unkept: Unkept = [("a", oom(&["grasp", "snip"])), ("b", oom(&["grasp"]))]
            .into_iter()
            .map(|(id, e)| (id.to_string(), e))
            .collect();
        // the child scored a's grasp (a value) and b's grasp (the network's own error), not
        // a's snip; c was never out of memory
        let mut a = Cached::empty();
        a.values.insert("grasp".into(), 1.5);
        cache.insert("a", "ka", a);
        let mut b = Cached::empty();
        b.errors.insert("grasp".into(), "a NaN gradient".into());
        cache.insert("b", "kb", b);
        cache.insert("c", "kc", Cached::empty());
        settle(&mut unkept, &cache, &jobs);
        assert_eq!(unkept, [("a".to_string(), oom(&["snip"]))].into_iter().collect());
        // an entry of another key (the file changed) settles nothing
        let mut left: Unkept = [("a".to_string(), oom(&["snip"]))].into_iter().collect();
        cache.insert("a", "other", Cached::empty());
        settle(&mut left, &cache, &jobs);
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn a_fresh_process_only_where_it_can_help() {
        let unkept: Unkept =
            [("a".to_string(), BTreeMap::from([("g".to_string(), "oom".to_string())]))].into();
        let cpu = tch::Device::Cpu;
        assert!(worth_it(&unkept, 5, false, cpu), "after other networks");
        assert!(worth_it(&unkept, 1, true, cpu), "beside another lane");
        assert!(!worth_it(&unkept, 1, false, cpu), "the network ran alone on one lane");
        assert!(!worth_it(&unkept, 5, true, tch::Device::Cuda(0)), "a GPU's memory");
        assert!(!worth_it(&Unkept::new(), 5, true, cpu), "nothing to do");
        assert!(wanted("any.onnx"), "outside the fresh process, every network");
    }
}
