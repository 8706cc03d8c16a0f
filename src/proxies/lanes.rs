//! The proxies of one network on several threads ("lanes"). When there are fewer networks than
//! threads, a network's proxies are spread over the spare threads instead of handing libtorch
//! more intra-op threads, which spin more than they compute on networks this small
//! (docs/proxies.md, Threads).
//!
//! A task is one proxy, one part of a proxy that splits ([`Proxy::parts`]: swap's
//! initialisations, epsinas' two constants), or every proxy that reads the shared loss pass
//! together (they share its one forward and backward, so they stay on one thread). Each task
//! builds its own network: the proxies that read the default-initialised network without the
//! loss pass (nwot, l2_norm) pay one more build each, a parameter initialisation, small
//! beside their passes. Lanes take the dearest task left first ([`Proxy::cost`]). Every
//! network is initialised from the seed in Rust ([`crate::exec::Init`]) and each lane runs
//! libtorch on its own thread, so a score does not depend on the lanes: the values are bitwise
//! those of one lane.

use super::{finite, score_one, Proxy, ProxyInput, Reads};
use crate::error::Result;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Each proxy's score, or its failure's message, by name.
pub type Scores = BTreeMap<String, std::result::Result<f64, String>>;

/// The split proxies' parts, by proxy name and part.
type Parts = BTreeMap<(String, usize), Result<Vec<f64>>>;

/// One unit of a lane's work: a proxy's score, or one of its parts.
#[derive(Clone, Copy)]
pub(super) struct Job<'p> {
    pub(super) proxy: &'p dyn Proxy,
    part: Option<usize>,
}

impl Job<'_> {
    fn cost(&self) -> usize {
        self.proxy.cost() / if self.part.is_some() { self.proxy.parts() } else { 1 }
    }
}

/// The tasks of one network, dearest first: the proxies that read the loss pass together, the
/// parts of a proxy that splits one by one, every other proxy alone.
pub(super) fn tasks<'p>(proxies: &[&'p dyn Proxy]) -> Vec<Vec<Job<'p>>> {
    let (shared, alone): (Vec<&dyn Proxy>, Vec<&dyn Proxy>) =
        proxies.iter().partition(|p| p.reads() != Reads::default());
    let mut tasks: Vec<Vec<Job>> = Vec::new();
    for proxy in alone {
        match proxy.parts() {
            1 => tasks.push(vec![Job { proxy, part: None }]),
            n => tasks.extend((0..n).map(|i| vec![Job { proxy, part: Some(i) }])),
        }
    }
    if !shared.is_empty() {
        tasks.push(shared.into_iter().map(|proxy| Job { proxy, part: None }).collect());
    }
    tasks.sort_by_key(|t| std::cmp::Reverse(t.iter().map(Job::cost).sum::<usize>()));
    tasks
}

/// Scores every proxy of `proxies` on the network of `input`, on up to `lanes` threads (one:
/// in this thread, in order). Each lane runs libtorch on as many intra-op threads as the
/// caller's (a new thread would otherwise start at the machine's default); that should be one
/// (`tch::set_num_threads(1)`), or the lanes compete with libtorch's threads.
pub fn score_lanes(proxies: &[&dyn Proxy], input: ProxyInput, lanes: usize) -> Scores {
    if lanes <= 1 || proxies.len() <= 1 && proxies.iter().all(|p| p.parts() == 1) {
        let input = input.planning(proxies.iter().copied());
        return proxies.iter().flat_map(|p| score_one(*p, &input)).collect();
    }
    let ProxyInput { cg, images, seed, device, batch, .. } = input;
    let fresh = || ProxyInput::new(cg, images, seed, device).with_batch(batch);
    let tasks = tasks(proxies);
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Scores::new());
    let parts: Mutex<Parts> = Mutex::new(Parts::new());
    let intra = tch::get_num_threads();
    std::thread::scope(|s| {
        for _ in 0..lanes.min(tasks.len()) {
            s.spawn(|| {
                tch::set_num_threads(intra);
                while let Some(task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let started = std::time::Instant::now();
                    let input = fresh().planning(task.iter().map(|j| j.proxy));
                    for job in task {
                        match job.part {
                            None => {
                                let scores = score_one(job.proxy, &input);
                                out.lock().unwrap_or_else(|e| e.into_inner()).extend(scores);
                            }
                            Some(i) => {
                                let r = super::guarded(&input, job.proxy.name(), || {
                                    job.proxy.score_part(&input, i)
                                });
                                let key = (job.proxy.name().to_string(), i);
                                parts.lock().unwrap_or_else(|e| e.into_inner()).insert(key, r);
                            }
                        }
                    }
                    tracing::debug!(
                        "{}: {} on a lane in {:.2?}",
                        input.cg.source,
                        describe(task),
                        started.elapsed()
                    );
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut parts = parts.into_inner().unwrap_or_else(|e| e.into_inner());
    for p in proxies.iter().filter(|p| p.parts() > 1) {
        let input = fresh();
        let mine: Result<Vec<Vec<f64>>> = (0..p.parts())
            .map(|i| {
                parts.remove(&(p.name().to_string(), i)).unwrap_or_else(|| {
                    Err(input.fail(format!("{}: part {i} did not run", p.name())))
                })
            })
            .collect();
        out.extend(finite(*p, &input, mine.and_then(|v| p.combine(&input, v))));
    }
    out
}

/// A task's proxies, with the part of one that splits (`swap#2`), for the lanes' log.
fn describe(task: &[Job]) -> String {
    let name = |j: &Job| match j.part {
        Some(i) => format!("{}#{i}", j.proxy.name()),
        None => j.proxy.name().to_string(),
    };
    task.iter().map(name).collect::<Vec<_>>().join("+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::registry;

    #[test]
    fn loss_pass_readers_form_one_task_split_proxies_spread_and_the_dearest_go_first() {
        let all = registry();
        let refs: Vec<&dyn Proxy> = all.iter().map(|p| &**p).collect();
        let tasks = tasks(&refs);
        let names = |t: &Vec<Job>| t.iter().map(|j| j.proxy.name()).collect::<Vec<_>>();
        let shared: Vec<_> = tasks.iter().filter(|t| t.len() > 1).map(names).collect();
        assert_eq!(
            shared,
            vec![vec!["snip", "grad_norm", "jacov", "fisher", "grasp", "zico", "plain"]]
        );
        let jobs = tasks.iter().map(Vec::len).sum::<usize>();
        let parts: usize = all.iter().map(|p| p.parts() - 1).sum();
        assert_eq!(jobs, all.len() + parts, "every part of a split proxy is a task");
        let swap = tasks.iter().filter(|t| t[0].proxy.name() == "swap").count();
        assert_eq!(swap, 4, "swap's initialisations in four parts");
        let costs: Vec<usize> = tasks.iter().map(|t| t.iter().map(Job::cost).sum()).collect();
        assert!(costs.windows(2).all(|w| w[0] >= w[1]), "{costs:?}");
        assert_eq!(names(&tasks[0]).len(), 7, "the loss pass is the dearest task");
        assert_eq!(costs.last(), Some(&0), "the static proxies cost nothing");
    }
}
