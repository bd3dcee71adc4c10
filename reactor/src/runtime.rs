//! Starting and stopping the set of reactors, and reaching them from any thread.

use crate::cpuset::CoreMask;
use crate::dma::{self, PoolConfig};
use crate::mailbox::Mailbox;
use crate::reactor::{self, Local, LoopOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub cores: CoreMask,
    /// Block when idle instead of spinning (on by default).
    pub backoff: bool,
    pub ring_entries: u32,
    pub mailbox_capacity: usize,
    pub pool: PoolConfig,
    /// Pin each reactor thread to its core.
    pub pin: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: CoreMask::single(0),
            backoff: true,
            ring_entries: 1024,
            mailbox_capacity: 4096,
            pool: PoolConfig::default(),
            pin: true,
        }
    }
}

pub(crate) struct ReactorShared {
    pub cpu: usize,
    mailbox: Arc<Mailbox>,
    stop: AtomicBool,
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    iterations: AtomicU64,
}

impl ReactorShared {
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn publish(&self, busy_ns: u64, idle_ns: u64, iterations: u32) {
        self.busy_ns.store(busy_ns, Ordering::Relaxed);
        self.idle_ns.store(idle_ns, Ordering::Relaxed);
        self.iterations.store(iterations as u64, Ordering::Relaxed);
    }
}

struct Shared {
    reactors: Vec<Arc<ReactorShared>>,
}

/// A cheap, cloneable way to reach the reactors from any thread.
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

/// Per-reactor counters for `framework_get_reactors`.
#[derive(Debug, Clone)]
pub struct ReactorStats {
    pub index: usize,
    pub cpu: usize,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub iterations: u64,
}

impl Handle {
    pub fn num_reactors(&self) -> usize {
        self.0.reactors.len()
    }

    pub fn cpus(&self) -> Vec<usize> {
        self.0.reactors.iter().map(|r| r.cpu).collect()
    }

    pub(crate) fn reactor_shared(&self, index: usize) -> Arc<ReactorShared> {
        self.0.reactors[index].clone()
    }

    /// Queues `f` to run on reactor `index`. Never drops it: a full mailbox makes us wait.
    pub fn send(&self, index: usize, f: impl FnOnce() + Send + 'static) {
        let r = &self.0.reactors[index % self.0.reactors.len()];
        r.mailbox.send(Box::new(f));
    }

    /// Runs `f` on reactor `index` and waits for its result. On that reactor itself it runs
    /// inline (waiting for our own mailbox would deadlock).
    pub fn run_on<R: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        if reactor::core_index() == Some(index) {
            return f();
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(index, move || {
            let _ = tx.send(f());
        });
        rx.recv().expect("reactor stopped before answering")
    }

    /// Runs `f` on reactor `index`; `f` answers through the [`Reply`] whenever it is done
    /// (after I/O completes, say). The returned receiver yields that answer.
    pub fn call_on<R: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce(Reply<R>) + Send + 'static,
    ) -> mpsc::Receiver<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(index, move || f(Reply(tx)));
        rx
    }

    /// Runs `f` on every reactor, waiting for each result in reactor order.
    pub fn run_on_all<R: Send + 'static>(
        &self,
        f: impl Fn() -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        let receivers: Vec<_> = (0..self.num_reactors())
            .map(|i| {
                let f = f.clone();
                if reactor::core_index() == Some(i) {
                    let (tx, rx) = mpsc::sync_channel(1);
                    let _ = tx.send(f());
                    rx
                } else {
                    self.call_on(i, move |reply| reply.send(f()))
                }
            })
            .collect();
        receivers
            .into_iter()
            .map(|rx| rx.recv().expect("reactor stopped before answering"))
            .collect()
    }

    pub fn stats(&self) -> Vec<ReactorStats> {
        self.0
            .reactors
            .iter()
            .enumerate()
            .map(|(index, r)| ReactorStats {
                index,
                cpu: r.cpu,
                busy_ns: r.busy_ns.load(Ordering::Relaxed),
                idle_ns: r.idle_ns.load(Ordering::Relaxed),
                iterations: r.iterations.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// The answering end of [`Handle::call_on`].
pub struct Reply<R>(mpsc::SyncSender<R>);

impl<R> Reply<R> {
    pub fn send(self, value: R) {
        let _ = self.0.send(value);
    }
}

/// The running reactors. Dropping it without [`Runtime::shutdown`] stops them too.
pub struct Runtime {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    pub fn start(config: RuntimeConfig) -> std::io::Result<Runtime> {
        dma::init(&config.pool)?;
        let mut reactors = Vec::new();
        for &cpu in config.cores.cores() {
            reactors.push(Arc::new(ReactorShared {
                cpu,
                mailbox: Arc::new(Mailbox::new(config.mailbox_capacity)?),
                stop: AtomicBool::new(false),
                busy_ns: AtomicU64::new(0),
                idle_ns: AtomicU64::new(0),
                iterations: AtomicU64::new(0),
            }));
        }
        let handle = Handle(Arc::new(Shared { reactors }));
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, &cpu) in config.cores.cores().iter().enumerate() {
            let handle = handle.clone();
            let ready = ready_tx.clone();
            let cfg = config.clone();
            let can_pin = available.contains(&cpu);
            let thread = std::thread::Builder::new()
                .name(format!("reactor_{cpu}"))
                .spawn(move || {
                    if cfg.pin {
                        if can_pin {
                            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                        } else {
                            tracing::warn!("core {cpu} is not available; reactor {index} unpinned");
                        }
                    }
                    let mailbox = handle.0.reactors[index].mailbox.clone();
                    match Local::new(index, mailbox, cfg.ring_entries, handle) {
                        Ok(local) => {
                            let _ = ready.send(Ok(()));
                            let opts = LoopOptions {
                                backoff: cfg.backoff,
                            };
                            let run = std::panic::AssertUnwindSafe(|| reactor::run(local, opts));
                            if std::panic::catch_unwind(run).is_err() {
                                // A reactor that died would leave its queues, sockets and
                                // in-flight I/O hanging forever: fail loudly instead.
                                tracing::error!("reactor {index} panicked; aborting");
                                eprintln!("oxstor: reactor {index} panicked; aborting");
                                std::process::abort();
                            }
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut runtime = Runtime { handle, threads };
        for _ in 0..runtime.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    runtime.stop_and_join();
                    return Err(e);
                }
                Err(_) => {
                    runtime.stop_and_join();
                    return Err(std::io::Error::other("a reactor thread died during start"));
                }
            }
        }
        Ok(runtime)
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Asks every reactor to stop once its in-flight I/O has completed, and waits for them.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        for r in &self.handle.0.reactors {
            r.stop.store(true, Ordering::SeqCst);
            r.mailbox.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
