//! Call timers on a grid of instants shared by every call, so that calls wake together.
//!
//! A call's timers (the end of a rest from reading, its next reply write, housekeeping) fall at
//! instants of its own, and with hundreds of calls per thread nearly every millisecond has one:
//! the thread then wakes about once a millisecond (a context switch, an `epoll_wait`, the other
//! threads woken to help) for one or two calls each time. Moving the deadlines that tolerate it
//! onto a shared grid of ticks lets one wake-up serve every call due at that tick. Deadlines
//! that must not come later are moved to the tick before them (a reply frame may be sent up to
//! a frame early anyway, a rest bounded by a deciding frame ends sooner); a rest's plain length
//! to the nearest tick, so rests are as long on average. A zero tick leaves every deadline as
//! it is.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The grid's origin: any instant will do as long as every call shares it.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The grid, or none with a zero tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeGrid {
    tick: Duration,
}

impl WakeGrid {
    /// Every deadline left as it is.
    pub const OFF: WakeGrid = WakeGrid {
        tick: Duration::ZERO,
    };

    /// A grid of `tick` (zero: off).
    pub fn new(tick: Duration) -> Self {
        LazyLock::force(&ORIGIN);
        Self { tick }
    }

    /// The last tick at or before `at`: for deadlines that may come early, not late.
    pub fn before(&self, at: Instant) -> Instant {
        self.snap(at, Duration::ZERO)
    }

    /// The tick nearest to `at`: for deadlines that may move either way by half a tick.
    pub fn nearest(&self, at: Instant) -> Instant {
        self.snap(at, self.tick / 2)
    }

    /// The last tick at or before `at + shift` (`at` itself when off or before the origin).
    fn snap(&self, at: Instant, shift: Duration) -> Instant {
        let tick = self.tick.as_nanos();
        let Some(since) = (at + shift).checked_duration_since(*ORIGIN) else {
            return at;
        };
        if tick == 0 {
            return at;
        }
        let into = since.as_nanos() % tick;
        // `into` is below the tick, which is a `Duration`, so it fits in one.
        at + shift - Duration::from_nanos(into as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    fn offset(grid: &WakeGrid, at: Instant) -> u128 {
        (grid.before(at) - *ORIGIN).as_nanos() % TICK.as_nanos()
    }

    #[test]
    fn deadlines_snap_to_shared_ticks() {
        let grid = WakeGrid::new(TICK);
        let now = Instant::now();
        for ms in [0, 3, 7, 10, 25, 159] {
            let at = now + Duration::from_millis(ms);
            let before = grid.before(at);
            assert!(before <= at && at - before < TICK, "{ms} ms");
            assert_eq!(offset(&grid, before), 0, "{ms} ms: on the grid");
            let nearest = grid.nearest(at);
            let distance = if nearest > at {
                nearest - at
            } else {
                at - nearest
            };
            assert!(distance <= TICK / 2, "{ms} ms");
            assert_eq!(grid.before(nearest), nearest, "{ms} ms: on the grid");
        }
    }

    #[test]
    fn two_calls_due_within_a_tick_wake_at_the_same_instant() {
        let grid = WakeGrid::new(TICK);
        let tick = grid.before(Instant::now() + Duration::from_millis(50));
        let a = grid.before(tick + Duration::from_millis(1));
        let b = grid.before(tick + Duration::from_millis(9));
        assert_eq!(a, b);
    }

    #[test]
    fn off_leaves_deadlines_alone() {
        let grid = WakeGrid::new(Duration::ZERO);
        let at = Instant::now() + Duration::from_micros(12_345);
        assert_eq!(grid.before(at), at);
        assert_eq!(grid.nearest(at), at);
        assert_eq!(WakeGrid::OFF.before(at), at);
    }
}
