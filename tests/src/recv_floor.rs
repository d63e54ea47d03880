//! The receive floor: CPU per inbound 20 ms frame for a bare sink that only reads (no
//! WebSocket, no JSON, no call), on this machine's kernel, now. The shared VMs these benchmarks
//! run on change speed by a factor of three to four from one day to the next, so a worker's
//! CPU per call means little without the floor measured beside it (`benches/worker-load`
//! measures it before its runs; `benches/recv_floor.rs` compares it with other event loops).
//!
//! A sender thread writes one 260-byte frame (a Twilio media message with its WebSocket
//! header) per connection every 20 ms, spread evenly over the 20 ms; the sink thread's CPU
//! (utime + stime from /proc) over a 10 s window is divided by the frames it read.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::loadgen::procstat::parse_cpu;

/// Bytes per frame: a Twilio media message of 20 ms µ-law with its WebSocket header.
pub const FRAME_BYTES: usize = 260;
const FRAME_EVERY: Duration = Duration::from_millis(20);
const WARM_UP: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);
/// Each sink's read buffer.
pub const READ_BUFFER: usize = 4096;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub connections: usize,
    pub frames: u64,
    pub sink_cpu_seconds: f64,
    /// Sink CPU per frame read.
    pub micros_per_frame: f64,
    /// The same as a share of one core per call at 50 frames a second.
    pub percent_of_core_per_call: f64,
}

impl Floor {
    fn new(connections: usize, frames: u64, cpu: Duration) -> Self {
        let micros_per_frame = cpu.as_secs_f64() * 1e6 / frames.max(1) as f64;
        Self {
            connections,
            frames,
            sink_cpu_seconds: cpu.as_secs_f64(),
            micros_per_frame,
            percent_of_core_per_call: micros_per_frame * 50.0 / 1e4,
        }
    }
}

/// The worker's model of reading: a Tokio task per connection, readiness via epoll, one
/// wake-up and one `recv` per frame (on one single-threaded runtime).
pub fn tokio_floor(connections: usize) -> std::io::Result<Floor> {
    measure(connections, |conns, stop, bytes| {
        tokio_sink(conns, stop, bytes, Reading::AsItComes)
    })
}

/// The same sink with each task reading only every `rest`, asleep on a timer meanwhile, taking
/// what arrived in one read (what a worker's call does while nobody speaks).
pub fn tokio_rested_floor(connections: usize, rest: Duration) -> std::io::Result<Floor> {
    measure(connections, move |conns, stop, bytes| {
        tokio_sink(conns, stop, bytes, Reading::Rested(rest))
    })
}

/// As [`tokio_rested_floor`], with each socket's receive low-water mark raised above what a rest
/// brings (`SO_RCVLOWAT`), so frames arriving during a rest raise no readiness event and wake
/// no thread; each read after a rest goes straight to the socket.
pub fn tokio_rested_lowat_floor(connections: usize, rest: Duration) -> std::io::Result<Floor> {
    measure(connections, move |conns, stop, bytes| {
        tokio_sink(conns, stop, bytes, Reading::RestedQuiet(rest))
    })
}

/// Connects `connections` pairs, runs `sink` on its own thread over the accepted ends and the
/// sender on the others. `sink` reads until `stop` is set, adding what it read to `bytes`.
pub fn measure<S>(connections: usize, sink: S) -> std::io::Result<Floor>
where
    S: FnOnce(Vec<TcpStream>, &AtomicBool, &Arc<AtomicU64>) + Send + 'static,
{
    raise_fd_limit();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut senders = Vec::with_capacity(connections);
    let mut accepted = Vec::with_capacity(connections);
    for _ in 0..connections {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        senders.push(s);
        accepted.push(listener.accept()?.0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sink_thread = {
        let (stop, bytes) = (stop.clone(), bytes.clone());
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            sink(accepted, &stop, &bytes);
        })
    };
    let tid = tid_rx
        .recv()
        .map_err(|_| std::io::Error::other("the sink thread ended before it started"))?;
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || send_frames(senders, &stop))
    };
    std::thread::sleep(WARM_UP);
    let (cpu0, bytes0) = (thread_cpu(tid), bytes.load(Ordering::Relaxed));
    std::thread::sleep(WINDOW);
    let (cpu1, bytes1) = (thread_cpu(tid), bytes.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join();
    let sunk = sink_thread.join();
    if sent.is_err() || sunk.is_err() {
        return Err(std::io::Error::other("a receive-floor thread panicked"));
    }
    Ok(Floor::new(
        connections,
        (bytes1 - bytes0) / FRAME_BYTES as u64,
        cpu1.saturating_sub(cpu0),
    ))
}

/// One frame per connection every 20 ms, connection `i` at offset `i * 20 ms / n`, until
/// stopped; closes the connections at the end so blocked sinks wake.
fn send_frames(mut conns: Vec<TcpStream>, stop: &AtomicBool) {
    use std::io::Write;
    let frame = [b'x'; FRAME_BYTES];
    let n = conns.len().max(1);
    let start = Instant::now();
    let mut next = 0usize; // frames sent so far, over all connections
    while !stop.load(Ordering::Relaxed) && !conns.is_empty() {
        let due = start + FRAME_EVERY.mul_f64(next as f64 / n as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(1)));
            continue;
        }
        let _ = conns[next % n].write_all(&frame);
        next += 1;
    }
    for c in &mut conns {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
}

/// How a Tokio sink's tasks read.
#[derive(Clone, Copy)]
enum Reading {
    /// Each frame as it comes.
    AsItComes,
    /// After each rest, what arrived meanwhile, as readiness signals it.
    Rested(Duration),
    /// After each rest, straight from the socket, whose low-water mark keeps it from
    /// signaling anything meanwhile.
    RestedQuiet(Duration),
}

fn tokio_sink(conns: Vec<TcpStream>, stop: &AtomicBool, bytes: &Arc<AtomicU64>, reading: Reading) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        for conn in conns {
            if let Reading::RestedQuiet(_) = reading {
                set_receive_low_water_mark(&conn, 16 * 1024);
            }
            let Ok(conn) = conn
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(conn))
            else {
                continue;
            };
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut conn = conn;
                let mut buf = vec![0u8; READ_BUFFER];
                loop {
                    let read = match reading {
                        Reading::AsItComes => read_signaled(&mut conn, &mut buf).await,
                        Reading::Rested(rest) => {
                            tokio::time::sleep(rest).await;
                            read_signaled(&mut conn, &mut buf).await
                        }
                        Reading::RestedQuiet(rest) => {
                            tokio::time::sleep(rest).await;
                            read_through(&conn, &mut buf)
                        }
                    };
                    match read {
                        Some(read) => {
                            bytes.fetch_add(read as u64, Ordering::Relaxed);
                        }
                        None => break,
                    }
                }
            });
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// One read once the socket signals; `None` at its end.
async fn read_signaled(conn: &mut tokio::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    conn.read(buf).await.ok().filter(|&read| read > 0)
}

/// Everything waiting in the socket, signaled or not (reads until one leaves room, as the
/// worker's do); `None` at its end.
fn read_through(conn: &tokio::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
    use std::io::Read;
    let sock = socket2::SockRef::from(conn);
    let mut total = 0;
    loop {
        match (&*sock).read(buf) {
            Ok(0) => return None,
            Ok(read) if read == buf.len() => total += read,
            Ok(read) => return Some(total + read),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Some(total),
            Err(_) => return None,
        }
    }
}

fn set_receive_low_water_mark(conn: &TcpStream, bytes: libc::c_int) {
    // SAFETY: the descriptor is open (borrowed), and setsockopt reads `bytes` for its size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(conn),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Two sockets per connection: lift the soft limit on open files to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// utime + stime of thread `tid` of this process.
fn thread_cpu(tid: libc::pid_t) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|stat| parse_cpu(&stat))
        .unwrap_or_default()
}
