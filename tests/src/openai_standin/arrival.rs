//! When a request reached the stand-in's socket. A provider's latency starts when the request
//! reaches it; the stand-in's own delay in getting round to reading it (its runtime waiting for
//! a core it shares with the worker and the load generator) is the provider's time, and timed
//! from the handler it was counted as the worker's overhead. Plain-HTTP connections therefore
//! record the kernel's receive time of every read ([`ArrivalStream`]), and a handler takes the
//! latest: once the request is read whole, the arrival of its last bytes ("all of it is
//! there"). Over TLS the handler's own time is used, as before.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::arrival::{ArrivalStream, LatestArrival};
use crate::tls::TlsListener;

/// Accepts plain-HTTP connections whose reads are stamped.
pub struct StampingListener(TcpListener);

impl StampingListener {
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl axum::serve::Listener for StampingListener {
    type Io = ArrivalStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.0.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // e.g. out of file descriptors: wait rather than spin
                    tracing::warn!(%error, "stand-in accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            // As a provider's front end does: an answer's last bytes must not wait for the
            // client to acknowledge its first ones (Nagle's algorithm).
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
            return (ArrivalStream::best_effort(tcp), addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A handler's view of its request's arrival (an extractor that never fails).
#[derive(Clone, Default)]
pub struct RequestArrival(Option<LatestArrival>);

impl RequestArrival {
    /// When the request read so far reached the socket: the kernel's time of the latest read,
    /// never later than now; now when there is none (TLS, or a read the kernel did not stamp).
    pub fn or_now(&self) -> Instant {
        let now = Instant::now();
        let latest = self.0.as_ref().and_then(LatestArrival::get);
        latest.map_or(now, |at| Instant::from_std(at).min(now))
    }
}

impl Connected<IncomingStream<'_, StampingListener>> for RequestArrival {
    fn connect_info(stream: IncomingStream<'_, StampingListener>) -> Self {
        Self(Some(stream.io().latest()))
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for RequestArrival {
    fn connect_info(_stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(None)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestArrival {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ConnectInfo<RequestArrival>>()
            .map(|ConnectInfo(arrival)| arrival.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A request that sat in the socket before the stand-in read it counts from its arrival,
    /// not from the read; without a stamped connection, from now.
    #[tokio::test]
    async fn requests_count_from_their_arrival_at_the_socket() {
        assert!(RequestArrival::default().or_now() <= Instant::now());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = StampingListener::new(listener);
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut connection, _) = axum::serve::Listener::accept(&mut listener).await;
        let arrival = RequestArrival(Some(connection.latest()));
        // The kernel turns stamping on machine-wide a moment after the first socket asks, so
        // the first reads may come unstamped; a few rounds get a stamped one.
        let mut buf = [0u8; 64];
        let mut waited = None;
        for _ in 0..100 {
            let sent = Instant::now();
            client
                .write_all(b"POST /v1/chat/completions")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            let read_at = Instant::now();
            let _ = connection.read(&mut buf).await.unwrap();
            if connection.last_arrival().is_some() {
                let arrived = arrival.or_now();
                assert!(
                    arrived >= sent && arrived < read_at,
                    "{arrived:?} not in the wait"
                );
                waited = Some(read_at - arrived);
                break;
            }
        }
        assert!(waited.is_some(), "no read was ever stamped");
    }
}
