//! The receive floor (a benchmark, not a test): CPU per inbound 20 ms frame for a bare sink
//! that only reads, three ways, on this machine's kernel. It tells how much of a call's
//! per-frame cost is the kernel's and how much the event loop's, and what batching receives
//! across sockets (io_uring) would save:
//!
//! - `tokio`: a single-threaded Tokio runtime with one task per connection reading into a
//!   4 KiB buffer (the worker's model: readiness via epoll, one wake-up and one `recv` per
//!   frame);
//! - `tokio, reading every 80 ms`: the same, each task asleep on a timer between reads, taking
//!   what arrived meanwhile in one (a worker's call resting from its socket while nobody
//!   speaks, `CALLFLEET_INBOUND_REST_MS`);
//! - `tokio, reading every 80 ms, low-water mark`: the same with each socket's `SO_RCVLOWAT`
//!   above what a rest brings, so arriving frames wake no thread, and each read after a rest
//!   going to the socket directly (a worker's resting call, `server::quiet_stream`);
//! - `epoll`: one thread, edge-triggered epoll (mio), reading every ready socket until it would
//!   block (no tasks, no wakers);
//! - `io_uring`: one thread, one `recv` in flight per connection, completions reaped in batches
//!   (`submit_and_wait`): no readiness step and no `recv` syscall per frame.
//!
//! The sender, the window and the CPU accounting are `callfleet_tests::recv_floor`'s (the Tokio
//! sink is the one `benches/worker-load` measures before its runs).
//!
//! `cargo bench -p callfleet-tests --bench recv_floor -- [connections ...]` (default 1000).

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use callfleet_tests::recv_floor::{self, Floor, READ_BUFFER};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    println!(
        "| connections | sink | frames read | sink CPU | CPU per frame | % of a core per call (50 frames/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &sizes {
        for sink in [
            Sink::Tokio,
            Sink::TokioRested,
            Sink::TokioRestedLowat,
            Sink::Epoll,
            Sink::IoUring,
        ] {
            let floor = match sink {
                Sink::Tokio => recv_floor::tokio_floor(n),
                Sink::TokioRested => recv_floor::tokio_rested_floor(n, Duration::from_millis(80)),
                Sink::TokioRestedLowat => {
                    recv_floor::tokio_rested_lowat_floor(n, Duration::from_millis(80))
                }
                Sink::Epoll => recv_floor::measure(n, epoll_sink),
                Sink::IoUring => recv_floor::measure(n, uring_sink),
            }
            .expect("measure");
            let Floor {
                frames,
                sink_cpu_seconds,
                micros_per_frame,
                percent_of_core_per_call,
                ..
            } = floor;
            println!(
                "| {n} | {} | {frames} | {sink_cpu_seconds:.2} s | {micros_per_frame:.2} µs | {percent_of_core_per_call:.4}% |",
                sink.name(),
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Sink {
    Tokio,
    TokioRested,
    TokioRestedLowat,
    Epoll,
    IoUring,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Sink::Tokio => "tokio (task per connection)",
            Sink::TokioRested => "tokio, reading every 80 ms",
            Sink::TokioRestedLowat => "tokio, reading every 80 ms, low-water mark",
            Sink::Epoll => "epoll loop (mio)",
            Sink::IoUring => "io_uring (batched recv)",
        }
    }
}

fn epoll_sink(conns: Vec<TcpStream>, stop: &AtomicBool, bytes: &Arc<AtomicU64>) {
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

fn uring_sink(conns: Vec<TcpStream>, stop: &AtomicBool, bytes: &Arc<AtomicU64>) {
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
