//! Precise response deadlines. Tokio's timer ticks in whole milliseconds and rounds every sleep
//! up, so under load a configured 150 ms came out at 150.5–152 ms, and the load generator
//! counted the difference as the worker's overhead. A deadline is waited for on Tokio's timer
//! until shortly before it, then by one thread that sleeps on the kernel's high-resolution
//! timers (one wake-up per deadline, tens of microseconds late at most).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long before a deadline the precise thread takes over from Tokio's timer.
const HANDOVER: Duration = Duration::from_millis(3);

/// Waits until `deadline`, to within the kernel timer's slack.
pub async fn sleep_until(deadline: tokio::time::Instant) {
    if let Some(coarse) = deadline.checked_sub(HANDOVER)
        && coarse > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(coarse).await;
    }
    let (tx, rx) = oneshot::channel();
    let wake = Wake {
        at: deadline.into_std(),
        tx,
    };
    match precise_thread() {
        Some(thread) if thread.send(wake).is_ok() => {
            let _ = rx.await;
        }
        _ => tokio::time::sleep_until(deadline).await,
    }
}

struct Wake {
    at: Instant,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wake {
    /// Reversed, so the max-heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

/// The sender to the timer thread, started on first use (`None` if it could not start).
fn precise_thread() -> Option<&'static mpsc::Sender<Wake>> {
    static THREAD: OnceLock<Option<mpsc::Sender<Wake>>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("standin-clock".into())
                .spawn(move || run(rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn run(rx: mpsc::Receiver<Wake>) {
    let mut due = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while due.peek().is_some_and(|w: &Wake| w.at <= now) {
            if let Some(wake) = due.pop() {
                let _ = wake.tx.send(());
            }
        }
        let next = match due.peek() {
            Some(wake) => rx.recv_timeout(wake.at.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(wake) => due.push(wake),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_before_the_deadline() {
        let start = tokio::time::Instant::now();
        let waits = [7u64, 2, 5, 0].map(|ms| async move {
            let deadline = start + Duration::from_millis(ms);
            sleep_until(deadline).await;
            let now = tokio::time::Instant::now();
            assert!(now >= deadline, "woke {:?} early", deadline - now);
        });
        futures::future::join_all(waits).await;
    }
}
