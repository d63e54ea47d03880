//! The receive floor (a benchmark, not a test): CPU per inbound 20 ms frame for a bare sink
//! that only reads, three ways, on this machine's kernel. It tells how much of a call's
//! per-frame cost is the kernel's and how much the event loop's, and what batching receives
//! across sockets (io_uring) would save:
//!
//! - `tokio`: a single-threaded Tokio runtime with one task per connection reading into a
//!   4 KiB buffer (the worker's model: readiness via epoll, one wake-up and one `recv` per
//!   frame);
//! - `epoll`: one thread, edge-triggered epoll (mio), reading every ready socket until it would
//!   block (no tasks, no wakers);
//! - `io_uring`: one thread, one `recv` in flight per connection, completions reaped in batches
//!   (`submit_and_wait`): no readiness step and no `recv` syscall per frame.
//!
//! A sender thread writes one 260-byte frame (a Twilio media message with its WebSocket
//! header) per connection every 20 ms, spread evenly over the 20 ms. The sink thread's CPU
//! (utime + stime from /proc) over a 10 s window is divided by the frames it read.
//!
//! `cargo bench -p callfleet-tests --bench recv_floor -- [connections ...]` (default 1000).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FRAME_BYTES: usize = 260;
const FRAME_EVERY: Duration = Duration::from_millis(20);
const WARM_UP: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);
const READ_BUFFER: usize = 4096;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    raise_fd_limit();
    println!(
        "| connections | sink | frames read | sink CPU | CPU per frame | % of a core per call (50 frames/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &sizes {
        for sink in [Sink::Tokio, Sink::Epoll, Sink::IoUring] {
            let (frames, cpu) = measure(n, sink);
            let per_frame_us = cpu.as_secs_f64() * 1e6 / frames.max(1) as f64;
            println!(
                "| {n} | {} | {frames} | {:.2} s | {per_frame_us:.2} µs | {:.4}% |",
                sink.name(),
                cpu.as_secs_f64(),
                per_frame_us * 50.0 / 1e4,
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Sink {
    Tokio,
    Epoll,
    IoUring,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Sink::Tokio => "tokio (task per connection)",
            Sink::Epoll => "epoll loop (mio)",
            Sink::IoUring => "io_uring (batched recv)",
        }
    }
}

/// Connects `n` pairs, runs `sink` on the accepted ends and the sender on the others; returns
/// the frames the sink read in the window and its CPU time meanwhile.
fn measure(n: usize, sink: Sink) -> (u64, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut senders = Vec::with_capacity(n);
    let mut accepted = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        senders.push(s);
        accepted.push(listener.accept().expect("accept").0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sink_thread = {
        let (stop, bytes) = (stop.clone(), bytes.clone());
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).expect("tid");
            match sink {
                Sink::Tokio => tokio_sink(accepted, &stop, &bytes),
                Sink::Epoll => epoll_sink(accepted, &stop, &bytes),
                Sink::IoUring => uring_sink(accepted, &stop, &bytes),
            }
        })
    };
    let tid = tid_rx.recv().expect("sink tid");
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || send_frames(senders, &stop))
    };
    std::thread::sleep(WARM_UP);
    let (cpu0, bytes0) = (thread_cpu(tid), bytes.load(Ordering::Relaxed));
    std::thread::sleep(WINDOW);
    let (cpu1, bytes1) = (thread_cpu(tid), bytes.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
    sink_thread.join().expect("sink");
    (
        (bytes1 - bytes0) / FRAME_BYTES as u64,
        cpu1.saturating_sub(cpu0),
    )
}

/// One frame per connection every 20 ms, connection `i` at offset `i * 20 ms / n`, until
/// stopped; closes the connections at the end so blocked sinks wake.
fn send_frames(mut conns: Vec<TcpStream>, stop: &AtomicBool) {
    let frame = [b'x'; FRAME_BYTES];
    let n = conns.len();
    let start = Instant::now();
    let mut next = 0usize; // frames sent so far, over all connections
    while !stop.load(Ordering::Relaxed) {
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

fn tokio_sink(conns: Vec<TcpStream>, stop: &AtomicBool, bytes: &Arc<AtomicU64>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for conn in conns {
            conn.set_nonblocking(true).expect("nonblocking");
            let mut conn = tokio::net::TcpStream::from_std(conn).expect("tokio stream");
            let bytes = bytes.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; READ_BUFFER];
                while let Ok(read) = conn.read(&mut buf).await {
                    if read == 0 {
                        break;
                    }
                    bytes.fetch_add(read as u64, Ordering::Relaxed);
                }
            });
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

fn epoll_sink(conns: Vec<TcpStream>, stop: &AtomicBool, bytes: &AtomicU64) {
    let mut poll = mio::Poll::new().expect("poll");
    let mut streams: Vec<mio::net::TcpStream> = conns
        .into_iter()
        .map(|c| {
            c.set_nonblocking(true).expect("nonblocking");
            mio::net::TcpStream::from_std(c)
        })
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(s, mio::Token(i), mio::Interest::READABLE)
            .expect("register");
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUFFER];
    while !stop.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        for event in &events {
            let stream = &mut streams[event.token().0];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(read) => {
                        bytes.fetch_add(read as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
    }
}

fn uring_sink(conns: Vec<TcpStream>, stop: &AtomicBool, bytes: &AtomicU64) {
    use io_uring::{IoUring, opcode, types};
    let n = conns.len();
    let entries = (n as u32).next_power_of_two().max(8);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(entries * 2)
        .build(entries)
        .expect("io_uring");
    let mut buffers = vec![vec![0u8; READ_BUFFER]; n];
    let recv = |i: usize, buf: &mut [u8]| {
        opcode::Recv::new(
            types::Fd(conns[i].as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
        .build()
        .user_data(i as u64)
    };
    for (i, buf) in buffers.iter_mut().enumerate() {
        // SAFETY: the buffer and the socket outlive the ring's use of them (both are dropped
        // after the loop, when no receive is reaped again).
        unsafe { ring.submission().push(&recv(i, buf)) }.expect("submission queue room");
    }
    let mut rearm = Vec::with_capacity(n);
    while !stop.load(Ordering::Relaxed) {
        if ring.submit_and_wait(1).is_err() {
            continue;
        }
        rearm.clear();
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            if cqe.result() > 0 {
                bytes.fetch_add(cqe.result() as u64, Ordering::Relaxed);
                rearm.push(i);
            }
        }
        for &i in &rearm {
            // SAFETY: as above.
            if unsafe { ring.submission().push(&recv(i, &mut buffers[i])) }.is_err() {
                let _ = ring.submit();
                // SAFETY: as above.
                let _ = unsafe { ring.submission().push(&recv(i, &mut buffers[i])) };
            }
        }
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
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 11 and 12 counting from the state field.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
}
