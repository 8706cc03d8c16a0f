//! Which network runs next when several run at once under a memory budget.
//!
//! Workers take networks in order, within a window of the oldest not yet started: a worker
//! prepares the next network (builds its CG and estimates its peak, [`super::memory`]), and
//! starts the oldest prepared network whose estimate fits beside the networks running. A
//! network estimated above the whole budget starts when nothing else runs. The window bounds
//! how far the others may pass a network that waits, so it does wait only that long, and the
//! networks finished at any moment are the first ones but for the last window's. There is no
//! barrier between groups of networks: a worker never idles while a network it could run is
//! left (a run saved every 16 networks used to wait for each group's slowest, leaving a core
//! idle for a quarter of an NB-101 run, docs/proxies.md "Memory").
//!
//! What a network frees stays in its worker's malloc arena, for the worker's next network to
//! reuse instead of faulting fresh pages in (on NB-201 cells, handing it back to the kernel
//! after every network took a third of the time, docs/proxies.md "Memory"). The budget counts
//! it: a worker holds the largest need it ran since the last trim, and a network starts when
//! every worker's larger of its hold and its running need fits. When the oldest waiting
//! network fits only once the holds are gone, a worker hands the freed memory back
//! ([`super::memory::release_freed`]) and the holds start again from nothing.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

/// What a worker does next.
#[derive(Debug, PartialEq, Eq)]
enum Pick<T> {
    /// Run the prepared network `index`, which takes `need` bytes of the budget.
    Run { index: usize, need: u64, payload: T },
    /// Prepare network `index` (build it and estimate its need), then hand it back.
    Prepare(usize),
    /// Hand the memory the workers hold back to the kernel, then pick again.
    Trim,
    /// Wait until a network finishes or is prepared.
    Wait,
    /// Nothing is left.
    Done,
}

/// The scheduler's state: the pure rule behind [`run`], apart so it can be tested.
#[derive(Debug)]
struct Window<T> {
    budget: u64,
    width: usize,
    total: usize,
    /// The next network not yet handed out to prepare.
    next: usize,
    /// Networks handed out to prepare, not yet back.
    preparing: BTreeSet<usize>,
    /// Prepared networks that have not started, oldest first.
    waiting: Vec<(usize, u64, T)>,
    /// Per worker, the need of the network it runs.
    running: Vec<Option<u64>>,
    /// Per worker, the largest need it ran since the last trim: what its arena may hold.
    held: Vec<u64>,
    /// A worker is handing the holds back.
    trimming: bool,
}

impl<T> Window<T> {
    fn new(total: usize, budget: u64, width: usize, workers: usize) -> Self {
        Window {
            budget,
            width: width.max(1),
            total,
            next: 0,
            preparing: BTreeSet::new(),
            waiting: Vec::new(),
            running: vec![None; workers.max(1)],
            held: vec![0; workers.max(1)],
            trimming: false,
        }
    }

    /// What the workers other than `w` take: each its running need or its hold, the larger;
    /// with `trimmed`, as if the holds had been handed back.
    fn others(&self, w: usize, trimmed: bool) -> u64 {
        let held = |v: usize| if trimmed { 0 } else { self.held[v] };
        (0..self.running.len())
            .filter(|&v| v != w)
            .map(|v| self.running[v].unwrap_or(0).max(held(v)))
            .fold(0u64, u64::saturating_add)
    }

    /// Whether worker `w` may start a network of `need` bytes now (its own hold is memory it
    /// reuses), or once every hold is handed back. With nothing else running or held, it
    /// starts whatever its need (a network above the whole budget runs alone).
    fn fits(&self, w: usize, need: u64, trimmed: bool) -> bool {
        let own = if trimmed { need } else { need.max(self.held[w]) };
        let others = self.others(w, trimmed);
        others == 0 || others.saturating_add(own) <= self.budget
    }

    /// The oldest network not yet started.
    fn oldest(&self) -> usize {
        let waiting = self.waiting.first().map(|w| w.0);
        let preparing = self.preparing.first().copied();
        [waiting, preparing].into_iter().flatten().min().unwrap_or(self.next)
    }

    /// What worker `w` does next: the oldest waiting network that fits runs, or the holds are
    /// handed back when that is what it waits for; else the next network is prepared.
    fn pick(&mut self, w: usize) -> Pick<T> {
        for at in 0..self.waiting.len() {
            let need = self.waiting[at].1;
            if self.fits(w, need, false) {
                let (index, need, payload) = self.waiting.remove(at);
                self.running[w] = Some(need);
                return Pick::Run { index, need, payload };
            }
            if !self.trimming && self.held.iter().any(|&h| h > 0) && self.fits(w, need, true) {
                self.trimming = true;
                return Pick::Trim;
            }
        }
        if self.next < self.total && self.next < self.oldest() + self.width {
            self.preparing.insert(self.next);
            self.next += 1;
            return Pick::Prepare(self.next - 1);
        }
        let idle = self.running.iter().all(Option::is_none);
        if idle && self.preparing.is_empty() && self.waiting.is_empty() && self.next >= self.total {
            Pick::Done
        } else {
            Pick::Wait
        }
    }

    fn prepared(&mut self, index: usize, need: u64, payload: T) {
        self.preparing.remove(&index);
        let at = self.waiting.partition_point(|w| w.0 < index);
        self.waiting.insert(at, (index, need, payload));
    }

    /// Worker `w` finished its network: it now holds what the network needed, or more.
    fn finished(&mut self, w: usize) {
        if let Some(need) = self.running[w].take() {
            self.held[w] = self.held[w].max(need);
        }
    }

    /// The freed memory went back to the kernel: nothing is held beyond the running needs.
    fn trimmed(&mut self) {
        self.held.iter_mut().for_each(|h| *h = 0);
        self.trimming = false;
    }

    /// Forgets a network whose preparation failed.
    fn abandon(&mut self, index: usize) {
        self.preparing.remove(&index);
    }

    /// Hands out nothing more to prepare (a run that stops early).
    fn close(&mut self) {
        self.total = self.next;
    }
}

/// How far networks may start ahead of the oldest one not started, unless a caller needs
/// otherwise: `nape proxies` saves its cache every this many networks, so the cells finished
/// at a save are a prefix of its sample but for the last window.
pub const WINDOW: usize = 16;

/// A network prepared to run: its estimated peak in bytes and what the run reads.
pub struct Prepared<T> {
    pub need: u64,
    pub payload: T,
}

/// How many networks run at once, and in how much memory.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Worker threads, each running one network at a time on libtorch's intra-op threads of
    /// the calling thread.
    pub workers: usize,
    /// Bytes the networks running at once may take together (`None`: no bound).
    pub budget: Option<u64>,
    /// How far networks may start ahead of the oldest one not started.
    pub window: usize,
}

/// Runs networks `0..total` on `plan.workers` threads: `prepare(i)` builds network `i` and
/// estimates its peak, `run(i, payload)` runs it once it fits, and `done(i, result)` takes
/// each result on the calling thread as it comes (to save progress, say). When `done` fails,
/// no further network starts and its error is returned once those running have finished.
pub fn run<T: Send, R: Send, E>(
    total: usize,
    plan: Plan,
    prepare: impl Fn(usize) -> Prepared<T> + Sync,
    run: impl Fn(usize, T) -> R + Sync,
    mut done: impl FnMut(usize, R) -> Result<(), E>,
) -> Result<(), E> {
    let workers = plan.workers.clamp(1, total.max(1));
    let budget = plan.budget.unwrap_or(u64::MAX);
    let state = Mutex::new(Window::new(total, budget, plan.window, workers));
    let changed = Condvar::new();
    let stop = AtomicBool::new(false);
    let intra = tch::get_num_threads();
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    let outcome = std::thread::scope(|s| {
        for worker in 0..workers {
            let (tx, state, changed, stop) = (tx.clone(), &state, &changed, &stop);
            let (prepare, run) = (&prepare, &run);
            s.spawn(move || {
                tch::set_num_threads(intra);
                work(worker, (state, changed, stop), prepare, |i, payload| {
                    // a send fails only when the receiver stopped; nothing is left to tell
                    let _ = tx.send((i, run(i, payload)));
                });
            });
        }
        drop(tx);
        let mut outcome = Ok(());
        for (i, r) in rx {
            if outcome.is_ok() {
                outcome = done(i, r);
                if outcome.is_err() {
                    stop.store(true, Ordering::SeqCst);
                    lock(&state).close();
                    changed.notify_all();
                }
            }
        }
        outcome
    });
    // what the workers still hold goes back once they are done (a Python session goes on)
    super::memory::release_freed();
    outcome
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Worker `worker`'s loop: prepare, run or trim as the window picks, wait when it says so,
/// until done.
fn work<T>(
    worker: usize,
    (state, changed, stop): (&Mutex<Window<T>>, &Condvar, &AtomicBool),
    prepare: &(impl Fn(usize) -> Prepared<T> + Sync),
    mut run: impl FnMut(usize, T),
) {
    loop {
        let mut w = lock(state);
        let pick = loop {
            match w.pick(worker) {
                Pick::Wait => w = changed.wait(w).unwrap_or_else(|e| e.into_inner()),
                pick => break pick,
            }
        };
        drop(w);
        // a panic in one network gives its claim back before it unwinds, so the other workers
        // finish theirs instead of waiting for it (the scope then raises the panic)
        match pick {
            Pick::Done => return,
            Pick::Prepare(i) => match catch_unwind(AssertUnwindSafe(|| prepare(i))) {
                Ok(p) => lock(state).prepared(i, p.need, p.payload),
                Err(panic) => {
                    lock(state).abandon(i);
                    changed.notify_all();
                    resume_unwind(panic);
                }
            },
            Pick::Trim => {
                super::memory::release_freed();
                lock(state).trimmed();
            }
            Pick::Run { index, payload, .. } => {
                let ran = catch_unwind(AssertUnwindSafe(|| {
                    if !stop.load(Ordering::SeqCst) {
                        run(index, payload);
                    }
                }));
                lock(state).finished(worker);
                if let Err(panic) = ran {
                    changed.notify_all();
                    resume_unwind(panic);
                }
            }
            Pick::Wait => unreachable!("waits are taken above"),
        }
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn run_of<T>(p: Pick<T>) -> (usize, u64) {
        match p {
            Pick::Run { index, need, .. } => (index, need),
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn a_waiting_network_is_passed_only_within_the_window_and_then_runs_alone() {
        // budget 10, window 3, workers 0-2: network 0 (need 6) runs; 1 (need 12, over the
        // budget) waits
        let mut w: Window<()> = Window::new(6, 10, 3, 3);
        assert_eq!(w.pick(0), Pick::Prepare(0));
        w.prepared(0, 6, ());
        assert_eq!(run_of(w.pick(0)), (0, 6));
        assert_eq!(w.pick(1), Pick::Prepare(1));
        w.prepared(1, 12, ());
        // 2 and 3 are within the window of the oldest waiting (1); 2 fits beside 0, 3 does not
        assert_eq!(w.pick(1), Pick::Prepare(2));
        w.prepared(2, 4, ());
        assert_eq!(run_of(w.pick(1)), (2, 4));
        assert_eq!(w.pick(2), Pick::Prepare(3));
        w.prepared(3, 5, ());
        // 4 is outside the window of 1: nothing to do until something finishes
        assert_eq!(w.pick(2), Pick::Wait);
        w.finished(0);
        // worker 0 holds 6, which 3 reuses beside 2; 1 is older and runs only alone
        assert_eq!(run_of(w.pick(0)), (3, 5));
        assert_eq!(w.pick(2), Pick::Wait);
        w.finished(1);
        w.finished(0);
        // nothing runs, but workers 0 and 1 hold 6 and 4: handed back before 1 runs
        assert_eq!(w.pick(2), Pick::Trim);
        assert_eq!(w.pick(0), Pick::Wait, "one trim at a time");
        w.trimmed();
        assert_eq!(run_of(w.pick(2)), (1, 12));
        assert_eq!(w.pick(0), Pick::Prepare(4));
        w.prepared(4, 1, ());
        // preparing goes on (it starts nothing), but nothing runs beside the big network
        assert_eq!(w.pick(0), Pick::Prepare(5));
        w.prepared(5, 1, ());
        assert_eq!(w.pick(0), Pick::Wait, "nothing runs beside the network over the budget");
        w.finished(2);
        // nor beside what it leaves held
        assert_eq!(w.pick(0), Pick::Trim);
        w.trimmed();
        assert_eq!(run_of(w.pick(0)), (4, 1));
        assert_eq!(run_of(w.pick(1)), (5, 1));
        assert_eq!(w.pick(2), Pick::Wait);
        w.finished(0);
        w.finished(1);
        assert_eq!(w.pick(2), Pick::Done);
    }

    #[test]
    fn the_oldest_network_that_fits_starts_first() {
        let mut w: Window<()> = Window::new(3, 10, 16, 2);
        for i in 0..3 {
            assert_eq!(w.pick(0), Pick::Prepare(i));
        }
        w.prepared(2, 3, ());
        w.prepared(0, 7, ());
        w.prepared(1, 5, ());
        assert_eq!(run_of(w.pick(0)), (0, 7));
        assert_eq!(run_of(w.pick(1)), (2, 3), "1 does not fit beside 0, 2 does");
    }

    #[test]
    fn a_worker_reuses_what_it_holds_and_hands_it_back_only_when_a_network_waits_for_it() {
        let mut w: Window<()> = Window::new(4, 10, 16, 2);
        for i in 0..4 {
            assert_eq!(w.pick(0), Pick::Prepare(i));
        }
        for (i, need) in [6, 6, 3, 8].into_iter().enumerate() {
            w.prepared(i, need, ());
        }
        assert_eq!(run_of(w.pick(0)), (0, 6));
        assert_eq!(run_of(w.pick(1)), (2, 3), "1 does not fit beside 0");
        w.finished(0);
        // worker 0 holds 6 and runs 1 (6) in it: 6 beside worker 1's 3, no trim
        assert_eq!(run_of(w.pick(0)), (1, 6));
        w.finished(1);
        // 3 (8) fits neither beside worker 0's network nor once the holds are gone
        assert_eq!(w.pick(1), Pick::Wait);
        w.finished(0);
        // it fits once worker 0's hold of 6 is handed back
        assert_eq!(w.pick(1), Pick::Trim);
        w.trimmed();
        assert_eq!(run_of(w.pick(1)), (3, 8));
        w.finished(1);
        assert_eq!(w.pick(0), Pick::Done);
    }

    #[test]
    fn threads_never_hold_more_than_the_budget_and_every_network_runs_once() {
        let needs: Vec<u64> = (0..40u64).map(|i| if i % 7 == 0 { 15 } else { 1 + i % 4 }).collect();
        let (held, peak, alone) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let plan = Plan { workers: 4, budget: Some(10), window: 5 };
        let mut seen = Vec::new();
        let out: Result<(), ()> = run(
            needs.len(),
            plan,
            |i| Prepared { need: needs[i], payload: needs[i] },
            |_, need| {
                let now = held.fetch_add(need, Ordering::SeqCst) + need;
                if need > 10 && now != need {
                    alone.fetch_add(1, Ordering::SeqCst);
                }
                if need <= 10 {
                    peak.fetch_max(now, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
                held.fetch_sub(need, Ordering::SeqCst);
                need
            },
            |i, need| {
                seen.push((i, need));
                Ok(())
            },
        );
        assert!(out.is_ok());
        assert!(peak.load(Ordering::SeqCst) <= 10, "{}", peak.load(Ordering::SeqCst));
        assert_eq!(alone.load(Ordering::SeqCst), 0, "an over-budget network ran beside another");
        seen.sort_unstable();
        let want: Vec<(usize, u64)> = needs.iter().copied().enumerate().collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_failing_done_stops_new_networks_and_returns_its_error() {
        let plan = Plan { workers: 2, budget: None, window: 4 };
        let mut taken = 0;
        let out = run(
            100,
            plan,
            |i| Prepared { need: 1, payload: i },
            |_, i| i,
            |_, _| {
                taken += 1;
                if taken == 3 {
                    Err("disk full")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(out, Err("disk full"));
        assert_eq!(taken, 3, "results after the failure are not handed on");
    }

    #[test]
    fn a_panic_in_one_network_is_raised_after_the_others_finish() {
        let plan = Plan { workers: 2, budget: Some(2), window: 4 };
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let out = catch_unwind(AssertUnwindSafe(|| {
            run(
                12,
                plan,
                |i| {
                    assert_ne!(i, 9, "network 9 cannot be built");
                    Prepared { need: 1, payload: i }
                },
                |_, i| {
                    assert_ne!(i, 3, "network 3 fails");
                    finished.fetch_add(1, Ordering::SeqCst);
                },
                |_, _| Ok::<(), ()>(()),
            )
        }));
        assert!(out.is_err(), "the panic is raised");
        assert!(finished.load(Ordering::SeqCst) >= 1);
    }
}
