//! Throwaway TLS for tests and benchmarks: a private CA and a certificate it signs for
//! `127.0.0.1` and `localhost`, so the worker's provider connections can be tested over real
//! TLS (what production uses towards OpenAI) against a local server; a listener that serves
//! HTTPS with it (the stand-in's) and a TLS front for a plain server (an ingress's).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A CA certificate (what a client trusts) and a server certificate and key it signed.
#[derive(Clone)]
pub struct TestPki {
    /// PEM of the CA certificate: a pipeline's `provider.caBundle`.
    pub ca_pem: String,
    /// PEM of the server certificate (for 127.0.0.1 and localhost).
    pub server_cert_pem: String,
    /// PEM (PKCS#8) of the server's private key.
    pub server_key_pem: String,
}

impl TestPki {
    /// Generates a fresh CA and server certificate (ECDSA P-256).
    pub fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "callfleet test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "callfleet test server");
        let server_cert = server_params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    /// Reads `ca.pem`, `server.pem` and `server-key.pem` from `dir`, generating and writing
    /// them first if `server.pem` is missing (the benchmark and local stack share one CA).
    pub fn in_dir(dir: &Path) -> anyhow::Result<Self> {
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server-key.pem"),
        );
        if !cert.exists() {
            std::fs::create_dir_all(dir)?;
            let pki = Self::generate()?;
            std::fs::write(&ca, &pki.ca_pem)?;
            std::fs::write(&key, &pki.server_key_pem)?;
            std::fs::write(&cert, &pki.server_cert_pem)?;
            return Ok(pki);
        }
        Ok(Self {
            ca_pem: std::fs::read_to_string(ca)?,
            server_cert_pem: std::fs::read_to_string(cert)?,
            server_key_pem: std::fs::read_to_string(key)?,
        })
    }

    /// A rustls server config presenting the server certificate (HTTP/1.1 only, as OpenAI's
    /// endpoints are reached by the worker).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let chain = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS front for a plain-TCP server, as an ingress terminating TLS with a private CA's
/// certificate would be: each connection's TLS is terminated here and its bytes piped to the
/// backend.
pub struct TlsFront {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Listens on an ephemeral 127.0.0.1 port, presenting `pki`'s server certificate.
    pub async fn start(pki: &TestPki, backend: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = tcp.local_addr()?;
        let mut listener = TlsListener::new(tcp, pki.server_config()?);
        let task = tokio::spawn(async move {
            loop {
                let (mut tls, _) = axum::serve::Listener::accept(&mut listener).await;
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client that connects and never finishes its handshake is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// An axum listener that completes each connection's TLS handshake before handing it to the
/// server (the stand-in's HTTPS, the TLS front's accept loop).
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // e.g. out of file descriptors: wait rather than spin
                    tracing::warn!(%error, "TLS listener accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(error)) => tracing::debug!(%addr, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
