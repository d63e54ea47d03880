//! Precise response deadlines. Tokio's timer ticks in whole milliseconds and rounds every sleep
//! up, so under load a configured 150 ms came out at 150.5–152 ms, and the load generator
//! counted the difference as the worker's overhead. A deadline is waited for on Tokio's timer
//! until shortly before it, then on a `timerfd` (the kernel's high-resolution timers) registered
//! with the runtime's own event loop: the thread that sends the answer is woken once, at the
//! deadline, by the kernel. (Until 2026-12-02 a separate clock thread slept until each deadline
//! and then woke the runtime's thread: two wake-ups in a row at every deadline, each a chance
//! to wait for a busy core, counted as the worker's overhead.)

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// How long before a deadline the timerfd takes over from Tokio's timer (long waits hold no
/// file descriptor).
const HANDOVER: Duration = Duration::from_millis(3);

/// Waits until `deadline`, to within the kernel timer's slack.
pub async fn sleep_until(deadline: Instant) {
    if let Some(coarse) = deadline.checked_sub(HANDOVER)
        && coarse > Instant::now()
    {
        tokio::time::sleep_until(coarse).await;
    }
    if let Err(error) = precise_sleep_until(deadline).await {
        tracing::debug!(%error, "timerfd unavailable; waiting on Tokio's timer");
        tokio::time::sleep_until(deadline).await;
    }
}

/// A timerfd, which `AsyncFd` takes by its raw descriptor.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

async fn precise_sleep_until(deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(());
    }
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    // Tokio's `Instant` is `CLOCK_MONOTONIC` underneath but does not expose it, so the
    // deadline is carried over as an offset from the clock's current reading.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    timer.set(
        Expiration::OneShot(now + TimeSpec::from_duration(left)),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
    )?;
    // SAFETY: `Timer` owns the timerfd, which stays open and the same descriptor until the
    // `AsyncFd` holding it is dropped.
    let timer = unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
        .map_err(|error| error.into_parts().1)?;
    // A timerfd is readable once it has expired (and fires a little after the deadline, never
    // before: the offset was taken before the clock was read). Should readiness ever come
    // early, Tokio's timer covers the rest rather than waiting on a descriptor that will not
    // fire again.
    drop(timer.readable().await?);
    if Instant::now() < deadline {
        tokio::time::sleep_until(deadline).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_before_the_deadline() {
        let start = Instant::now();
        let waits = [7u64, 2, 5, 0].map(|ms| async move {
            let deadline = start + Duration::from_millis(ms);
            sleep_until(deadline).await;
            let now = Instant::now();
            assert!(now >= deadline, "woke {:?} early", deadline - now);
        });
        futures::future::join_all(waits).await;
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_returns_at_once() {
        let past = Instant::now() - Duration::from_millis(5);
        sleep_until(past).await;
        precise_sleep_until(past).await.unwrap();
    }
}
