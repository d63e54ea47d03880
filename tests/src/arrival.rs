//! A TCP stream that remembers when the kernel received the data it last read
//! (`SO_TIMESTAMPNS`), so the load generator times the worker's replies by their arrival at its
//! socket, and the OpenAI stand-in times its answers from a request's arrival, not from when
//! their runtimes, busy on a shared machine, got round to reading them.
//!
//! A read may return bytes of several segments; the kernel stamps the read with the last of
//! them, so a message's arrival is never reported earlier than it happened (a measured latency
//! can only come out too long, never too short).

use std::io;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::cmsg_space;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A connected TCP stream whose reads record the kernel's receive time.
#[derive(Debug)]
pub struct ArrivalStream {
    inner: TcpStream,
    latest: LatestArrival,
    control: Vec<u8>,
}

/// The kernel's receive time of a stream's latest read, shared: whoever holds a clone (the
/// stand-in's request handlers) sees what the stream's reads record.
#[derive(Debug, Clone, Default)]
pub struct LatestArrival(Arc<Mutex<Option<Instant>>>);

impl LatestArrival {
    /// `None` before the first read, or if the kernel gave the latest read no timestamp:
    /// callers fall back to their read time.
    pub fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, arrival: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = arrival;
    }
}

impl ArrivalStream {
    /// Turns on receive timestamps for `inner`.
    pub fn new(inner: TcpStream) -> io::Result<Self> {
        setsockopt(&inner, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        Ok(Self::wrap(inner))
    }

    /// The same, but a socket that refuses stamping is kept, unstamped (its reads report no
    /// arrival, so callers use their read time), rather than lost with the error.
    pub fn best_effort(inner: TcpStream) -> Self {
        if let Err(error) = setsockopt(&inner, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(%error, "receive timestamps unavailable");
        }
        Self::wrap(inner)
    }

    fn wrap(inner: TcpStream) -> Self {
        Self {
            inner,
            latest: LatestArrival::default(),
            control: cmsg_space!(TimeSpec),
        }
    }

    /// When the kernel received the data of the latest read (see [`LatestArrival::get`]).
    pub fn last_arrival(&self) -> Option<Instant> {
        self.latest.get()
    }

    /// A handle on the latest read's arrival that others can keep.
    pub fn latest(&self) -> LatestArrival {
        self.latest.clone()
    }
}

/// The monotonic instant of a `CLOCK_REALTIME` timestamp, by the clocks' offset now. A
/// timestamp in the future (clock stepped) maps to now.
fn realtime_to_instant(stamp: TimeSpec) -> Instant {
    let (wall, mono) = (SystemTime::now(), Instant::now());
    let stamp = UNIX_EPOCH + Duration::new(stamp.tv_sec().max(0) as u64, stamp.tv_nsec() as u32);
    match wall.duration_since(stamp) {
        Ok(ago) => mono.checked_sub(ago).unwrap_or(mono),
        Err(_) => mono,
    }
}

impl AsyncRead for ArrivalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let out = buf.initialize_unfilled();
            // `try_io` clears the readiness on `WouldBlock`, so the next poll waits again.
            let inner = &this.inner;
            let result = inner.try_io(Interest::READABLE, || {
                let fd = inner.as_raw_fd();
                let mut iov = [IoSliceMut::new(out)];
                let message =
                    recvmsg::<()>(fd, &mut iov, Some(&mut this.control), MsgFlags::empty())
                        .map_err(io::Error::from)?;
                let mut stamp = None;
                for cmsg in message.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmTimestampns(at) = cmsg {
                        stamp = Some(at);
                    }
                }
                Ok((message.bytes, stamp))
            });
            match result {
                Ok((read, stamp)) => {
                    // A read without a stamp (the kernel turns stamping on for the whole
                    // machine a moment after the first socket asks) must not keep an older one.
                    this.latest.set(stamp.map(realtime_to_instant));
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for ArrivalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_carry_the_kernels_receive_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut stream = ArrivalStream::new(client).unwrap();
        assert_eq!(stream.last_arrival(), None);

        // The kernel enables receive stamps machine-wide shortly after the first socket asks
        // for them, so the first segments may come unstamped; a few rounds get a stamped one.
        let mut buf = [0u8; 64];
        let mut stamped = None;
        for _ in 0..100 {
            let before = Instant::now();
            server.write_all(b"a frame").await.unwrap();
            // Read only after the data has sat in the socket a while: the arrival stays the
            // kernel's, earlier than the read.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let read = stream.read(&mut buf).await.unwrap();
            let read_at = Instant::now();
            assert_eq!(&buf[..read], b"a frame");
            if let Some(arrival) = stream.last_arrival() {
                stamped = Some((before, arrival, read_at));
                break;
            }
        }
        let (before, arrival, read_at) = stamped.expect("a stamped read within 100 rounds");
        assert!(
            arrival >= before - Duration::from_millis(5),
            "{arrival:?} {before:?}"
        );
        assert!(
            arrival + Duration::from_millis(10) < read_at,
            "{arrival:?} {read_at:?}"
        );

        stream.write_all(b"reply").await.unwrap();
        let mut echo = [0u8; 5];
        server.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"reply");
        drop(server);
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0, "end of stream");
    }
}
