//! Cheap monotonic time for the I/O path.
//!
//! `Instant::now()` is a vDSO call; at millions of I/Os per second that shows. We read the TSC
//! through `quanta` (calibrated once per process) and convert to nanoseconds only when a value
//! leaves the hot path (a latency histogram, a timer deadline).

use std::sync::OnceLock;

fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Raw ticks; only differences are meaningful.
#[inline]
pub fn ticks() -> u64 {
    clock().raw()
}

/// Nanoseconds between two raw tick readings (`later` ≥ `earlier`, saturating otherwise).
#[inline]
pub fn ticks_to_ns(earlier: u64, later: u64) -> u64 {
    if later <= earlier {
        return 0;
    }
    clock().delta_as_nanos(earlier, later)
}

/// Nanoseconds since the first call in this process: the time base for timers.
#[inline]
pub fn now_ns() -> u64 {
    ticks_as_ns(ticks())
}

/// A tick reading on the [`now_ns`] scale, so one TSC read can serve both.
#[inline]
pub fn ticks_as_ns(t: u64) -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    let base = *BASE.get_or_init(ticks);
    ticks_to_ns(base, t)
}
