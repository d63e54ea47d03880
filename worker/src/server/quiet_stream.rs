//! Connections whose frames the kernel keeps quiet about while their call rests from reading.
//!
//! A call resting from its socket (`session::inbound_rest`) leaves the frames that arrive
//! meanwhile in the kernel and takes them in one read when the rest ends. Resting saved the
//! reads, but not the wake-ups: every frame that arrives still makes the socket readable, the
//! event loop's `epoll_wait` returns for it (a thread woken, its events harvested, readiness
//! recorded for a task that is not listening) and parks again. At 500 calls that was most of a
//! worker's wake-ups. While a call rests, its socket's receive low-water mark (`SO_RCVLOWAT`) is
//! raised above anything a rest brings, so the kernel signals nothing, and the read that ends
//! the rest goes to the socket directly instead of waiting for a readiness event that now never
//! comes. A bare sink reading every 80 ms took 4.2 times less CPU per frame that way
//! (`benches/recv_floor.rs`). When the call reads frames as they come again the mark goes back
//! to one byte, and the kernel signals at once what arrived in between.
//!
//! [`QuietListener`] is the listener the worker serves (every connection a [`QuietStream`]),
//! and [`Peer`] the connection info a handler gets, with the [`QuietReads`] a call uses.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The low-water mark while quiet: far above what the longest rest brings (300 ms of 16 kHz
/// L16 is 9.6 KB), and small enough that the kernel neither grows the receive buffer nor
/// clamps the window for it (it does when twice the mark exceeds the buffer).
const QUIET_MARK: i32 = 32 * 1024;

/// Accepts connections as [`QuietStream`]s, tuned by `tune` as they come.
pub struct QuietListener<F> {
    listener: TcpListener,
    tune: F,
}

impl<F> QuietListener<F>
where
    F: FnMut(&TcpStream) + Send + 'static,
{
    pub fn new(listener: TcpListener, tune: F) -> Self {
        Self { listener, tune }
    }
}

impl<F> Listener for QuietListener<F>
where
    F: FnMut(&TcpStream) + Send + 'static,
{
    type Io = QuietStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (QuietStream, SocketAddr) {
        loop {
            let (tcp, addr) = Listener::accept(&mut self.listener).await;
            (self.tune)(&tcp);
            match QuietStream::new(tcp) {
                Ok(stream) => return (stream, addr),
                // Registering with the event loop failed (out of memory): this connection is
                // dropped, as one the kernel could not accept.
                Err(err) => tracing::warn!(error = %err, peer = %addr, "connection dropped"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// What a handler learns about its connection: the peer's address, and the call's control
/// over the kernel's readiness signals.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub reads: QuietReads,
}

impl<F> Connected<IncomingStream<'_, QuietListener<F>>> for Peer
where
    F: FnMut(&TcpStream) + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, QuietListener<F>>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            reads: stream.io().reads(),
        }
    }
}

struct Shared {
    /// The socket, registered with the event loop for its readiness signals.
    tcp: AsyncFd<std::net::TcpStream>,
    /// Reads go to the socket whether or not it signaled, until one finds nothing.
    read_through: AtomicBool,
}

/// A TCP connection that reads past its readiness signal when told to ([`QuietReads`]).
pub struct QuietStream {
    shared: Arc<Shared>,
}

impl QuietStream {
    fn new(tcp: TcpStream) -> io::Result<Self> {
        // SAFETY: the `std` stream owns its descriptor, which stays open and the same until the
        // `AsyncFd` that owns the stream drops it.
        let tcp = unsafe { AsyncFd::register(tcp.into_std()?) }?;
        Ok(Self {
            shared: Arc::new(Shared {
                tcp,
                read_through: AtomicBool::new(false),
            }),
        })
    }

    /// The handle a call uses to quiet this connection.
    pub fn reads(&self) -> QuietReads {
        QuietReads {
            shared: self.shared.clone(),
        }
    }
}

/// A call's control over its connection's readiness signals.
#[derive(Clone)]
pub struct QuietReads {
    shared: Arc<Shared>,
}

impl QuietReads {
    /// Quiet (`true`): the kernel signals nothing until far more than a rest's frames are
    /// waiting. Not quiet: it signals every byte, and at once if some are waiting.
    pub fn quiet(&self, quiet: bool) -> io::Result<()> {
        set_receive_low_water_mark(
            self.shared.tcp.get_ref(),
            if quiet { QUIET_MARK } else { 1 },
        )
    }

    /// The next reads go to the socket even though it may not have signaled, until one finds
    /// nothing there.
    pub fn read_through(&self) {
        self.shared.read_through.store(true, Ordering::Relaxed);
    }
}

#[cfg(target_os = "linux")]
fn set_receive_low_water_mark(tcp: &std::net::TcpStream, bytes: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = bytes;
    // SAFETY: the descriptor is open (the stream is borrowed), and setsockopt only reads
    // `size_of::<c_int>()` bytes from `value`, which lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the kernel keeps signaling every frame: calls still rest, only without the quiet.
#[cfg(not(target_os = "linux"))]
fn set_receive_low_water_mark(_tcp: &std::net::TcpStream, _bytes: i32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_RCVLOWAT wake-ups are Linux's",
    ))
}

/// One `recv` into the unfilled part of `buf`; how many bytes it read.
fn recv_into(tcp: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: `recv` only writes into the slice, never de-initializes it.
    let unfilled = unsafe { buf.unfilled_mut() };
    let read = SockRef::from(tcp).recv(unfilled)?;
    // SAFETY: `recv` initialized the first `read` bytes of the unfilled part.
    unsafe { buf.assume_init(read) };
    buf.advance(read);
    Ok(read)
}

impl AsyncRead for QuietStream {
    /// Reads as Tokio's own `TcpStream` does (a read that leaves room means the socket is
    /// empty: its readiness is cleared without another `recv` to find that out), except while
    /// reading through.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &*self.shared;
        // A read that leaves room found everything the socket had.
        let room = buf.remaining();
        if shared.read_through.load(Ordering::Relaxed) {
            match recv_into(shared.tcp.get_ref(), buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    shared.read_through.store(false, Ordering::Relaxed);
                }
                Err(err) => return Poll::Ready(Err(err)),
                Ok(read) => {
                    // The socket is empty (or at its end): the next read waits for a signal,
                    // and any signal already recorded is spent (an end of stream's stays).
                    if read < room {
                        shared.read_through.store(false, Ordering::Relaxed);
                    }
                    if read > 0
                        && read < room
                        && let Poll::Ready(Ok(mut ready)) = shared.tcp.poll_read_ready(cx)
                    {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
        loop {
            let mut ready = ready!(shared.tcp.poll_read_ready(cx))?;
            match ready.try_io(|tcp| recv_into(tcp.get_ref(), buf)) {
                Ok(Ok(read)) => {
                    // Empty now (an end of stream stays signaled).
                    if read > 0 && read < room {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                // Nothing there after all: the readiness was cleared, wait for the next.
                Err(_would_block) => continue,
            }
        }
    }
}

impl QuietStream {
    /// One write as Tokio's `TcpStream` does it: a short write clears the readiness.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        write: impl Fn(&std::net::TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.shared.tcp.poll_write_ready(cx))?;
            match ready.try_io(|tcp| write(tcp.get_ref())) {
                Ok(Ok(written)) => {
                    if written > 0 && written < len {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(written));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for QuietStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, data.len(), |mut tcp| tcp.write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = data.iter().map(|slice| slice.len()).sum();
        self.poll_write_with(cx, len, |mut tcp| tcp.write_vectored(data))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shared.tcp.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A connected pair: the worker's side as a `QuietStream`, the caller's as a plain stream.
    async fn pair() -> (QuietStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let caller = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (worker, _) = listener.accept().await.unwrap();
        (QuietStream::new(worker).unwrap(), caller)
    }

    /// Whether a read completes before the caller's bytes could only be waited for.
    async fn read_signaled(stream: &mut QuietStream, buf: &mut [u8]) -> Option<usize> {
        tokio::time::timeout(Duration::from_millis(300), stream.read(buf))
            .await
            .ok()
            .map(|read| read.unwrap())
    }

    #[tokio::test]
    async fn a_quiet_connection_signals_nothing_and_is_read_through() {
        let (mut stream, mut caller) = pair().await;
        let reads = stream.reads();
        let mut buf = [0u8; 4096];
        reads.quiet(true).unwrap();
        caller.write_all(&[7u8; 300]).await.unwrap();
        assert_eq!(
            read_signaled(&mut stream, &mut buf).await,
            None,
            "a few frames below the mark raise no readiness"
        );
        reads.read_through();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 300, "read through");
        assert_eq!(&buf[..300], &[7u8; 300]);
    }

    #[tokio::test]
    async fn ending_the_quiet_signals_what_arrived_meanwhile() {
        let (mut stream, mut caller) = pair().await;
        let reads = stream.reads();
        let mut buf = [0u8; 4096];
        reads.quiet(true).unwrap();
        caller.write_all(b"hello").await.unwrap();
        assert_eq!(read_signaled(&mut stream, &mut buf).await, None);
        reads.quiet(false).unwrap();
        assert_eq!(read_signaled(&mut stream, &mut buf).await, Some(5));
        assert_eq!(&buf[..5], b"hello");
        // Back to every byte signaled.
        caller.write_all(b"!").await.unwrap();
        assert_eq!(read_signaled(&mut stream, &mut buf).await, Some(1));
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_during_the_quiet_is_seen_to_end() {
        let (mut stream, mut caller) = pair().await;
        let reads = stream.reads();
        reads.quiet(true).unwrap();
        caller.write_all(b"bye").await.unwrap();
        drop(caller);
        reads.read_through();
        let mut buf = [0u8; 64];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        assert_eq!(
            read_signaled(&mut stream, &mut buf).await,
            Some(0),
            "end of stream"
        );
    }

    #[tokio::test]
    async fn reading_through_an_empty_socket_waits_for_the_signal() {
        let (mut stream, mut caller) = pair().await;
        stream.reads().read_through();
        let mut buf = [0u8; 64];
        let read = tokio::spawn(async move { stream.read(&mut buf).await.unwrap() });
        tokio::task::yield_now().await;
        caller.write_all(b"late").await.unwrap();
        assert_eq!(read.await.unwrap(), 4);
    }

    #[tokio::test]
    async fn writes_and_shutdown_reach_the_peer() {
        let (mut stream, mut caller) = pair().await;
        stream.write_all(b"reply").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        caller.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"reply");
    }
}
