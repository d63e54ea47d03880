//! Single-threaded media runtimes (`CALLFLEET_MEDIA_THREADS=N`, and the default on a pod that
//! may use one core). Each runs its own single-threaded Tokio runtime accepting on its own
//! listener bound to the shared port with `SO_REUSEPORT`, so the kernel spreads new calls across
//! them and a call then lives on one thread from start to end: its socket, its timers and its
//! provider connections are driven by the same reactor, with no cross-thread wake-ups (one such
//! runtime used ~10% less CPU per call than work stealing at 1,000 calls; several were no
//! cheaper, see BENCHMARKS.md).
//!
//! Per-thread resources (the provider connection pools) are picked by [`index`].
//!
//! Every media runtime, single-threaded or work-stealing, is built here so that each gets the
//! same event batching (`CALLFLEET_EVENT_BATCH_US`).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::thread::{Thread, ThreadId};
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections per listener before the kernel drops new SYNs; the kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4), so this asks for that cap. With
/// 1,024 a burst of calls arriving at a cold worker overflowed the queue (111 SYNs dropped
/// when 1,000 calls arrived at a just-started worker), and each dropped SYN costs its caller
/// the kernel's 1 s retransmission timeout.
const BACKLOG: i32 = 65_535;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The media thread this code runs on: 0 on the main runtime (and on any thread that is not a
/// media thread), 1.. on the extra ones.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the calling thread as media thread `index`.
pub fn enter(index: usize) {
    INDEX.with(|cell| cell.set(index));
}

/// The single-threaded runtime a media thread runs, batching events by `event_batch`.
pub fn runtime(event_batch: Duration) -> io::Result<Runtime> {
    batching(Builder::new_current_thread(), event_batch)
        .enable_all()
        .build()
}

/// One work-stealing runtime over `threads` threads, batching events by `event_batch`.
pub fn work_stealing(threads: usize, event_batch: Duration) -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(threads);
    batching(builder, event_batch).enable_all().build()
}

/// Event batching (`--event-batch-us`): a thread with nothing left to run sleeps `pause` before
/// it parks in `epoll_wait`, so the frames of many calls arrive meanwhile and are taken in one
/// wake-up. A wake-up (the context switch, `epoll_wait`, the futex between work-stealing
/// threads, the sender's side of waking us) costs more than handling a frame, and without the
/// pause most wake-ups under load find one or two. Work already queued is not delayed: the hook
/// runs only when the thread has none. Turns, whose provider answers should not wait, then run
/// on [`crate::turn_runtime`], which does not batch, and cut the pause short when they hand a
/// call the first audio of a reply ([`cut_pauses_short`]).
fn batching(mut builder: Builder, pause: Duration) -> Builder {
    if !pause.is_zero() {
        builder.on_thread_park(move || pause_for(pause));
    }
    builder
}

/// Threads that pause to batch events (registered by their first pause, removed when they end).
static PAUSING: Mutex<Vec<Thread>> = Mutex::new(Vec::new());

thread_local! {
    /// Registers the thread on first use, and leaves the list when the thread ends.
    static REGISTERED: Registration = Registration::current();
}

/// This thread's entry in [`PAUSING`], removed when the thread ends.
struct Registration(ThreadId);

impl Registration {
    fn current() -> Self {
        let me = std::thread::current();
        let id = me.id();
        pausing().push(me);
        Self(id)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        pausing().retain(|thread| thread.id() != self.0);
    }
}

fn pausing() -> std::sync::MutexGuard<'static, Vec<Thread>> {
    // Nothing panics while holding the lock; a poisoned list is still a valid list.
    PAUSING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One batching pause, which [`cut_pauses_short`] ends early.
fn pause_for(pause: Duration) {
    REGISTERED.with(|_| {});
    std::thread::park_timeout(pause);
}

/// Ends the batching pause of every media thread now in one, so that work just handed to
/// them from another thread (a reply's first audio, woken through Tokio) runs now rather than
/// after the pause: a reply's first audio otherwise waited for it, about half a pause on
/// average. A thread not pausing only skips its next pause. A no-op without batching.
pub fn cut_pauses_short() {
    for thread in pausing().iter() {
        thread.unpark();
    }
}

/// A non-blocking listener on `addr`. `shared`: other listeners on the same address (this
/// process's other media threads) may join it, and the kernel hashes each new connection to one
/// of them. A lone listener does not allow that, so a second worker started on the same port
/// fails to bind instead of silently taking half the calls.
fn listener(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(shared)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// `count` listeners on `addr` (a port of 0 is resolved by the first, the rest join it).
pub fn listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let shared = count > 1;
    let first = listener(addr, shared)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count.max(1) {
        all.push(listener(bound, shared)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn listeners_share_one_port() {
        let all = listeners(SocketAddr::from(([127, 0, 0, 1], 0)), 3).unwrap();
        let ports: Vec<u16> = all.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|&p| p == ports[0] && p != 0));
    }

    #[test]
    fn a_lone_listener_keeps_its_port_to_itself() {
        let one = listeners(SocketAddr::from(([127, 0, 0, 1], 0)), 1).unwrap();
        let addr = one[0].local_addr().unwrap();
        assert!(listeners(addr, 1).is_err());
        assert!(listeners(addr, 2).is_err());
    }

    /// Work handed to a pausing media thread from elsewhere runs when the pause is cut short,
    /// not after it (here a 60 s pause; the wait is bounded far below that).
    #[test]
    fn cutting_pauses_short_runs_handed_work_at_once() {
        let runtime = runtime(Duration::from_secs(60)).unwrap();
        let handle = runtime.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Idle until stopped: the thread pauses, the task below arrives meanwhile.
        let driver = std::thread::spawn(move || runtime.block_on(stop_rx));
        // The thread registers with its first pause; wait until it has.
        while !pausing().iter().any(|t| t.id() == driver.thread().id()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = done_tx.send(());
        });
        cut_pauses_short();
        assert!(
            done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "the handed task waited out the pause"
        );
        // Stopping is handed work too; an ended thread leaves the list.
        let id = driver.thread().id();
        stop_tx.send(()).unwrap();
        cut_pauses_short();
        driver.join().unwrap().unwrap();
        assert!(!pausing().iter().any(|t| t.id() == id));
    }

    /// A batching runtime still serves sockets and timers: the pause only delays the next
    /// wait for events, it never drops one.
    #[test]
    fn batching_runtimes_serve_sockets_and_timers() {
        let pause = Duration::from_millis(1);
        for runtime in [runtime(pause), work_stealing(2, pause)] {
            runtime.unwrap().block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let echo = tokio::spawn(async move {
                    let (mut peer, _) = listener.accept().await.unwrap();
                    let (mut read, mut write) = peer.split();
                    tokio::io::copy(&mut read, &mut write).await.unwrap();
                });
                let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
                for round in 0..20u8 {
                    tokio::time::sleep(Duration::from_micros(300)).await;
                    client.write_all(&[round; 160]).await.unwrap();
                    let mut back = [0u8; 160];
                    client.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, [round; 160]);
                }
                drop(client);
                echo.await.unwrap();
            });
        }
    }

    #[test]
    fn index_is_per_thread() {
        enter(3);
        assert_eq!(index(), 3);
        assert_eq!(std::thread::spawn(index).join().unwrap(), 0);
    }
}
