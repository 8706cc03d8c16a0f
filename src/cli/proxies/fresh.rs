//! The last try for networks that ran out of memory in a long run: the same command in a fresh
//! process. What a process keeps after many networks (glibc's heap span, mimalloc's reserved
//! arenas, oneDNN's compiled kernels) is address space that the run's cap
//! ([`crate::proxies::memory::cap_address_space`]) counts and nothing uses: in a run over 160
//! ImageNet files at `--batch 8`, 22 networks still failed after the retry alone, and a fresh
//! run scored them (docs/proxies.md "Memory"). The child runs the same arguments: the cache
//! serves it everything the parent scored (values and the networks' own errors), so it scores
//! only what ran out of memory, one network at a time, saves the cache and prints nothing on
//! stdout; the parent reads the cache again and reports every row.

use super::cached::{Cached, Unkept};
use super::Job;
use crate::dataset::cache::Cache;
use std::process::{Command, Stdio};

/// Set in the fresh process's environment: it scores one network at a time, writes the cache
/// and returns (the parent prints and writes the rows), and never starts another.
const CHILD: &str = "NAPE_PROXIES_FRESH";

/// Whether this process is the fresh one.
pub(super) fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Whether the networks of `unkept` may score in a fresh process: on the CPU (a GPU's memory is
/// not the address space this process holds), not from the fresh process itself, and only when
/// this process also scored other networks (`scored` in all): one network alone in a process
/// holds nothing another process would not.
pub(super) fn worth_it(unkept: &Unkept, scored: usize, device: tch::Device) -> bool {
    device == tch::Device::Cpu && !is_child() && !unkept.is_empty() && scored > unkept.len()
}

/// Runs this command again in a fresh process, which scores into the cache what ran out of
/// memory here. Its stderr is the user's (progress and warnings); a child that cannot start
/// or fails is a warning: the parent then reports the errors it has.
pub(super) fn rerun(networks: usize) {
    eprintln!(
        "{networks} networks ran out of memory in this process: again in a fresh process, \
         one at a time"
    );
    let status = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(CHILD, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
    });
    match status {
        Ok(s) if s.success() => {}
        // the child's own errors are the cache's (or out of memory again, reported below)
        Ok(s) if s.code().is_some() => tracing::debug!("the fresh process ended with {s}"),
        Ok(s) => tracing::warn!("the fresh process did not finish ({s})"),
        Err(e) => tracing::warn!("the fresh process could not start: {e}"),
    }
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
        assert!(worth_it(&unkept, 5, tch::Device::Cpu));
        assert!(!worth_it(&unkept, 1, tch::Device::Cpu), "the network ran alone");
        assert!(!worth_it(&unkept, 5, tch::Device::Cuda(0)), "a GPU's memory");
        assert!(!worth_it(&Unkept::new(), 5, tch::Device::Cpu), "nothing to do");
    }
}
