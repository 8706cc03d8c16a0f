//! How `nape proxies` scores what its cache lacks: the networks in parallel under a memory
//! budget ([`proxies::schedule`]), each network's proxies over the threads left, the cache
//! saved as it goes.

use super::cached::{Cached, Unkept};
use super::folded::Folded;
use super::{build_cg, Job, ProxiesArgs};
use crate::dataset::cache::Cache;
use crate::dataset::images::ImageSource;
use crate::graph::Cg;
use crate::proxies::schedule::{self, Plan};
use crate::proxies::{self, memory, Proxy, ProxyInput};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How many networks a run scores between saves of its cache (an interrupted run resumes
/// there, so it loses at most this many networks' work): the scheduler's window, so that what
/// is saved is a prefix of the sample but for the last window.
const SAVE_EVERY: usize = schedule::WINDOW;

/// What [`score_missing`] leaves: the errors it did not cache, how many networks it scored,
/// and whether it ran more than one network or lane at a time.
pub(super) struct Scored {
    pub(super) unkept: Unkept,
    pub(super) networks: usize,
    pub(super) concurrent: bool,
}

/// Scores, in parallel, every job whose cached entry lacks one of the proxies `ps`, saving the
/// cache after every [`SAVE_EVERY`] networks. Networks run together while their estimated
/// peaks fit in the memory budget ([`proxies::schedule`]). On a GPU a network that ran out of
/// memory beside others is run again alone once they are done: the estimates that schedule
/// networks do not see what the others hold. On the CPU that retry is the fresh process's
/// ([`super::fresh`]), which also leaves behind what this process holds; the fresh process
/// itself runs its networks one at a time from the start: they ran out of memory.
pub(super) fn score_missing(
    a: &ProxiesArgs,
    ps: &[Box<dyn Proxy>],
    images: &ImageSource,
    jobs: &[Job],
    device: tch::Device,
    cache: &mut Cache<Cached>,
) -> anyhow::Result<Scored> {
    let keys: Vec<String> = ps.iter().map(|p| p.key()).collect();
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let networks = jobs.iter().filter(|j| lacks_any(cache, j, &keys)).count();
    let (intra, lanes) = split_threads(threads, networks, a.intra_op);
    let mut at_once = Threads { intra, lanes, workers: (threads / intra).max(1) };
    if super::fresh::is_child() {
        at_once = Threads { lanes: 1, workers: 1, ..at_once };
    }
    let mut pass = |these: &[&Job], t| {
        let todo = missing(these.iter().copied(), cache, &keys);
        let cached = these.len() - todo.len();
        score_pass(a, (ps, &keys), images, todo, (device, t), cache, cached)
    };
    let unkept = if device == tch::Device::Cpu {
        pass(&jobs.iter().collect::<Vec<_>>(), at_once)?
    } else {
        again_alone(jobs, at_once, pass)?
    };
    Ok(Scored { unkept, networks, concurrent: at_once.workers * at_once.lanes > 1 })
}

/// Runs `pass` over `jobs` with the threads `at_once`, then, when more than one network or
/// lane ran at once, again over the networks that ran out of memory, one at a time. Returns
/// the out-of-memory errors left.
fn again_alone<'j>(
    jobs: &'j [Job],
    at_once: Threads,
    mut pass: impl FnMut(&[&'j Job], Threads) -> anyhow::Result<Unkept>,
) -> anyhow::Result<Unkept> {
    let all: Vec<&Job> = jobs.iter().collect();
    let mut unkept = pass(&all, at_once)?;
    let again: Vec<&Job> = jobs.iter().filter(|j| unkept.contains_key(&j.id)).collect();
    if again.is_empty() || at_once.workers * at_once.lanes == 1 {
        return Ok(unkept);
    }
    eprintln!("{} networks ran out of memory beside others: again, one at a time", again.len());
    for j in &again {
        unkept.remove(&j.id);
    }
    unkept.extend(pass(&again, Threads { lanes: 1, workers: 1, ..at_once })?);
    Ok(unkept)
}

/// How a pass spreads its threads: libtorch threads per lane, lanes per network, and networks
/// at once.
#[derive(Debug, Clone, Copy)]
struct Threads {
    intra: usize,
    lanes: usize,
    workers: usize,
}

/// One pass of [`score_missing`] over the networks `todo` (each with what its cache entry
/// holds; `cached` more were found in the cache): scores each into the cache, and returns the
/// out-of-memory errors it did not cache.
fn score_pass(
    a: &ProxiesArgs,
    (ps, keys): (&[Box<dyn Proxy>], &[String]),
    images: &ImageSource,
    todo: Vec<(&Job, Cached)>,
    (device, t): (tch::Device, Threads),
    cache: &mut Cache<Cached>,
    cached: usize,
) -> anyhow::Result<Unkept> {
    let lacking = |c: &Cached| -> Vec<&dyn Proxy> {
        ps.iter().zip(keys).filter(|(_, k)| c.lacks(k)).map(|(p, _)| &**p).collect()
    };
    tch::set_num_threads(t.intra as i32);
    let budget = memory_budget(a, device);
    let plan = Plan { workers: t.workers, budget, window: SAVE_EVERY };
    let bar = progress(todo.len(), cached)?;
    let t0 = std::time::Instant::now();
    // on the CPU, a network that cannot fit the machine at all is refused, not run into the
    // kernel's OOM killer with the whole batch (a GPU's memory is not the host's)
    let total = (device == tch::Device::Cpu).then(memory::machine_total).flatten();
    let opts = a.shape.options();
    let folded = Folded::default();
    let prepare = |i: usize| {
        let (job, c) = &todo[i];
        let cg = build_cg(job, &opts, a.folded_bn, &folded);
        memory::prepare(cg, &lacking(c), (t.lanes, a.batch), (budget, total), &job.id)
    };
    let run = |i: usize, cg: crate::Result<Cg>| {
        let mut c = todo[i].1.clone();
        score_job(cg, &lacking(&c), images, a, (device, t.lanes), &mut c);
        c
    };
    let mut scored = 0usize;
    let mut unkept = Unkept::new();
    schedule::run(todo.len(), plan, prepare, run, |i, mut c| -> anyhow::Result<()> {
        let job = todo[i].0;
        let out_of_memory = c.split_out_of_memory();
        if !out_of_memory.is_empty() {
            unkept.insert(job.id.clone(), out_of_memory);
        }
        cache.insert(&job.id, &job.key, c);
        bar.inc(1);
        scored += 1;
        if scored.is_multiple_of(SAVE_EVERY) {
            cache.save()?;
        }
        Ok(())
    })?;
    if !scored.is_multiple_of(SAVE_EVERY) {
        cache.save()?;
    }
    bar.finish_and_clear();
    folded.warn();
    report_time(scored, t0.elapsed().as_secs_f64(), t.workers * t.lanes * t.intra);
    Ok(unkept)
}

/// Says how long a pass took: the wall time per network of `scored` networks in `secs`, and
/// the `threads`' time each took (the cost on one core).
fn report_time(scored: usize, secs: f64, threads: usize) {
    if scored > 0 {
        let (wall, cost) = (secs / scored as f64, secs * threads as f64 / scored as f64);
        eprintln!(
            "scored {scored} networks in {secs:.1} s ({wall:.2} s each on {threads} threads, {cost:.2} thread-s each)"
        );
    }
}

/// Each job whose cache entry lacks one of the proxy keys `keys`, with what the entry holds.
fn missing<'j>(
    jobs: impl IntoIterator<Item = &'j Job>,
    cache: &Cache<Cached>,
    keys: &[String],
) -> Vec<(&'j Job, Cached)> {
    jobs.into_iter()
        .filter(|j| lacks_any(cache, j, keys))
        .map(|j| (j, cache.get(&j.id, &j.key).cloned().unwrap_or_else(Cached::empty)))
        .collect()
}

/// Whether `j`'s cache entry lacks one of the proxy keys `keys` (read in place, not copied).
fn lacks_any(cache: &Cache<Cached>, j: &Job, keys: &[String]) -> bool {
    match cache.get(&j.id, &j.key) {
        Some(c) => keys.iter().any(|k| c.lacks(k)),
        None => !keys.is_empty(),
    }
}

/// The memory budget that bounds how many networks run at once: `--memory`, or the host's
/// available memory on the CPU (a GPU's is not watched).
fn memory_budget(a: &ProxiesArgs, device: tch::Device) -> Option<u64> {
    match a.memory {
        Some(gb) => Some((gb * (1u64 << 30) as f64) as u64),
        None => (device == tch::Device::Cpu).then(memory::machine_budget).flatten(),
    }
}

/// The progress bar of a run that scores `todo` networks, `cached` more found in the cache.
fn progress(todo: usize, cached: usize) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(todo as u64);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} {elapsed} eta {eta}",
    )?);
    bar.set_message(format!("proxies ({cached} networks cached)"));
    Ok(bar)
}

/// How `threads` are used on `networks` networks: libtorch threads per lane (`intra_op`, by
/// default 1) and lanes per network. Networks run in parallel first (a CPU's best use,
/// docs/proxies.md, Threads); threads left over when there are fewer networks than threads go
/// to lanes, each network's proxies spread over them ([`proxies::score_lanes`]).
fn split_threads(threads: usize, networks: usize, intra_op: Option<usize>) -> (usize, usize) {
    let threads = threads.max(1);
    let intra = intra_op.unwrap_or(1).clamp(1, threads);
    let workers = threads / intra;
    (intra, (workers / networks.clamp(1, workers)).max(1))
}

/// Scores the proxies `todo` of one network into `c`, on `lanes` threads of `device` (a
/// network that could not be built is every proxy's error).
fn score_job(
    cg: crate::Result<Cg>,
    todo: &[&dyn Proxy],
    images: &ImageSource,
    a: &ProxiesArgs,
    (device, lanes): (tch::Device, usize),
    c: &mut Cached,
) {
    let cg = match cg {
        Ok(cg) => cg,
        Err(e) => {
            // the message alone: the report names the network
            let msg = e.into_message();
            for p in todo {
                c.errors.insert(p.key(), msg.clone());
            }
            return;
        }
    };
    let input = ProxyInput::new(&cg, images, a.seed, device).with_batch(a.batch);
    let scores = proxies::score_lanes(todo, input, lanes);
    // scores come back by name, and are cached under their proxy's key
    let key = |name: String| todo.iter().find(|p| p.name() == name).map_or(name, |p| p.key());
    for (k, v) in scores {
        let k = key(k);
        match v {
            Ok(v) => {
                c.errors.remove(&k);
                c.values.insert(k, v);
            }
            Err(e) => {
                c.errors.insert(k, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(id: &str) -> Job {
        let source = super::super::JobSource::File(id.into());
        Job { id: id.into(), key: id.into(), record: None, source }
    }

    /// What a pass that ran out of memory on the networks `ids` leaves.
    fn out_of_memory(ids: &[&str]) -> Unkept {
        let e = || BTreeMap::from([("grasp".to_string(), "can't allocate memory".to_string())]);
        ids.iter().map(|i| (i.to_string(), e())).collect()
    }

    #[test]
    fn networks_out_of_memory_beside_others_run_again_alone() {
        let jobs = [job("a"), job("b"), job("c")];
        let mut passes = Vec::new();
        let two = Threads { intra: 1, lanes: 1, workers: 2 };
        let left = again_alone(&jobs, two, |these, t| {
            let ids: Vec<String> = these.iter().map(|j| j.id.clone()).collect();
            passes.push((ids, t.workers, t.lanes));
            // beside each other b and c run out of memory; alone, only b does
            Ok(out_of_memory(if passes.len() == 1 { &["b", "c"] } else { &["b"] }))
        })
        .unwrap();
        let want = |ids: &[&str], w, l| (ids.iter().map(|s| s.to_string()).collect(), w, l);
        assert_eq!(passes, [want(&["a", "b", "c"], 2, 1), want(&["b", "c"], 1, 1)]);
        assert_eq!(left.keys().collect::<Vec<_>>(), ["b"], "c's error is gone, b's kept");
        // one network on one lane at a time already: nothing to gain from a second pass
        let (mut n, one) = (0, Threads { intra: 2, lanes: 1, workers: 1 });
        let left = again_alone(&jobs, one, |_, _| {
            n += 1;
            Ok(out_of_memory(&["a"]))
        })
        .unwrap();
        assert_eq!((n, left.len()), (1, 1));
        // two lanes of one network: the second pass runs it on one
        let lanes = Threads { intra: 1, lanes: 2, workers: 1 };
        let mut seen = Vec::new();
        again_alone(&jobs[..1], lanes, |_, t| {
            seen.push(t.lanes);
            Ok(out_of_memory(&["a"]))
        })
        .unwrap();
        assert_eq!(seen, [2, 1]);
    }

    #[test]
    fn spare_threads_go_to_lanes_after_networks() {
        // (threads, networks, --intra-op) -> (libtorch threads, lanes per network)
        assert_eq!(split_threads(2, 100, None), (1, 1));
        assert_eq!(split_threads(2, 1, None), (1, 2));
        assert_eq!(split_threads(8, 3, None), (1, 2));
        assert_eq!(split_threads(2, 1, Some(2)), (2, 1));
        assert_eq!(split_threads(8, 1, Some(2)), (2, 4));
        assert_eq!(split_threads(2, 0, Some(9)), (2, 1));
        assert_eq!(split_threads(0, 5, None), (1, 1));
    }
}
