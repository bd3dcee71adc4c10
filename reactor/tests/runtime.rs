//! The reactors as other crates use them: messages, run_on, pollers, timers, io_uring, back-off.

use oxstor_reactor::reactor::{register_timed_poller, with_ring};
use oxstor_reactor::{
    register_poller, schedule_after, CompletionHandler, CoreMask, PollStatus, Runtime,
    RuntimeConfig,
};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn runtime(cores: &[usize], backoff: bool) -> Runtime {
    Runtime::start(RuntimeConfig {
        cores: CoreMask::from_cores(cores.to_vec()).unwrap(),
        backoff,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn run_on_returns_results_from_each_core() {
    let rt = runtime(&[0, 1], true);
    let h = rt.handle();
    assert_eq!(h.run_on(0, oxstor_reactor::core_index), Some(0));
    assert_eq!(h.run_on(1, oxstor_reactor::core_index), Some(1));
    assert_eq!(h.run_on_all(|| 7), vec![7, 7]);
    rt.shutdown();
}

#[test]
fn messages_are_never_dropped_when_the_mailbox_is_full() {
    let rt = Runtime::start(RuntimeConfig {
        cores: CoreMask::from_cores(vec![0]).unwrap(),
        mailbox_capacity: 8,
        ..Default::default()
    })
    .unwrap();
    let h = rt.handle();
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..10_000 {
        let c = count.clone();
        h.send(0, move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
    }
    h.run_on(0, || ());
    assert_eq!(count.load(Ordering::Relaxed), 10_000);
    rt.shutdown();
}

#[test]
fn pollers_and_timers_run_on_their_core() {
    let rt = runtime(&[0], true);
    let h = rt.handle();
    let rx = h.call_on(0, |reply| {
        let hits = Rc::new(Cell::new(0u32));
        let h2 = hits.clone();
        register_poller("count", move || {
            h2.set(h2.get() + 1);
            PollStatus::Idle
        });
        let started = Instant::now();
        schedule_after(Duration::from_millis(20), move || {
            reply.send((started.elapsed(), hits.get()))
        });
    });
    let (elapsed, hits) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        elapsed >= Duration::from_millis(20),
        "timer fired early: {elapsed:?}"
    );
    assert!(hits > 0, "poller never ran");
    rt.shutdown();
}

struct Nops {
    done: Cell<u32>,
    reply: Cell<Option<oxstor_reactor::runtime::Reply<u32>>>,
    want: u32,
}

impl CompletionHandler for Nops {
    fn complete(&self, tag: u64, result: i32, _flags: u32) {
        assert_eq!(result, 0);
        assert!(tag < 64);
        self.done.set(self.done.get() + 1);
        if self.done.get() == self.want {
            if let Some(r) = self.reply.take() {
                r.send(self.done.get());
            }
        }
    }
}

#[test]
fn io_uring_completions_route_by_token() {
    let rt = runtime(&[0], true);
    let rx = rt.handle().call_on(0, |reply| {
        let nops = Rc::new(Nops {
            done: Cell::new(0),
            reply: Cell::new(Some(reply)),
            want: 64,
        });
        with_ring(|ring| {
            let id = ring.register_handler(nops.clone());
            for tag in 0..64 {
                // SAFETY: a NOP references no memory.
                unsafe { ring.push(io_uring::opcode::Nop::new().build(), id, tag) };
            }
        });
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 64);
    rt.shutdown();
}

/// CPU time (utime + stime) of one thread of this process.
fn thread_cpu_ns(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks * 1_000_000_000 / 100
}

#[test]
fn idle_reactors_back_off_and_wake_on_messages() {
    let rt = runtime(&[0, 1], true);
    let h = rt.handle();
    // A slow timed poller must not keep the reactor spinning between runs.
    h.run_on(0, || {
        register_timed_poller("slow", Duration::from_millis(100), || PollStatus::Idle);
    });
    // Only this runtime's reactor threads: other tests in this binary run concurrently.
    // SAFETY: gettid has no preconditions.
    let tids = h.run_on_all(|| unsafe { libc::gettid() });
    let cpu = || tids.iter().map(|&t| thread_cpu_ns(t)).sum::<u64>();
    std::thread::sleep(Duration::from_millis(100));
    let cpu0 = cpu();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu() - cpu0;
    let pct = used as f64 * 100.0 / t0.elapsed().as_nanos() as f64;
    assert!(pct < 10.0, "two idle reactors used {pct:.1}% CPU");
    // A message still wakes a sleeping reactor. Reactor 1 has no timer, so without the
    // eventfd wake it would sleep forever; the bound is generous because this is a
    // correctness check on a loaded machine, not a latency benchmark (see cargo bench).
    let t = Instant::now();
    h.run_on(1, || ());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "woke after {:?}",
        t.elapsed()
    );
    rt.shutdown();
}

mod net {
    use super::*;
    use oxstor_reactor::net::{
        RecvBuf, RecvMem, Segment, Socket, SocketEvents, TcpAcceptor, TcpSocket,
    };
    use std::io::{Read, Write};
    use std::sync::mpsc;

    struct Bytes(Vec<u8>);
    impl Segment for Bytes {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    /// Echoes every received chunk back, as a two-segment batch.
    struct Echo {
        sock: Rc<TcpSocket<Bytes>>,
    }
    impl SocketEvents<Bytes> for Echo {
        fn received(&self, buf: RecvBuf, result: i32) {
            if result <= 0 {
                self.sock.close();
                return;
            }
            let RecvMem::Heap(mem) = &buf.mem else {
                unreachable!()
            };
            let data = mem[..result as usize].to_vec();
            let half = data.len() / 2;
            self.sock.send(vec![
                Bytes(data[..half].to_vec()),
                Bytes(data[half..].to_vec()),
            ]);
            self.sock.recv(buf, false);
        }
        fn sent(&self, _segments: Vec<Bytes>, result: i32) {
            assert!(result >= 0);
        }
    }

    #[test]
    fn tcp_echo_over_io_uring() {
        let rt = runtime(&[0], true);
        let (tx, rx) = mpsc::channel();
        rt.handle().run_on(0, move || {
            let acc = TcpAcceptor::bind(
                "127.0.0.1:0".parse().unwrap(),
                Box::new(|fd| {
                    let sock = TcpSocket::<Bytes>::new(fd, None);
                    let echo: Rc<dyn SocketEvents<Bytes>> = Rc::new(Echo { sock: sock.clone() });
                    sock.set_events(Rc::downgrade(&echo));
                    std::mem::forget(echo); // lives as long as the test process
                    sock.recv(
                        RecvBuf {
                            mem: RecvMem::Heap(vec![0; 4096].into()),
                            offset: 0,
                            len: 4096,
                        },
                        false,
                    );
                }),
            )
            .unwrap();
            tx.send(acc.local_addr()).unwrap();
            ACCEPTOR.with(|a| *a.borrow_mut() = Some(acc));
        });
        let addr = rx.recv().unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        for round in 0..50u8 {
            let msg = vec![round; 1000];
            c.write_all(&msg).unwrap();
            let mut back = vec![0; 1000];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        drop(c);
        rt.handle().run_on(0, || {
            ACCEPTOR.with(|a| a.borrow_mut().take().unwrap().stop())
        });
        let t = Instant::now();
        rt.shutdown();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "sockets did not drain at shutdown"
        );
    }

    thread_local! {
        static ACCEPTOR: std::cell::RefCell<Option<Rc<TcpAcceptor>>> = const { std::cell::RefCell::new(None) };
    }
}
