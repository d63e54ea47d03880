//! A real S3-compatible server for tests: S3Proxy (Maven Central `org.gaul:s3proxy`) with its
//! filesystem blobstore, on 127.0.0.1, with one bucket and a fixed access key.
//!
//! The jar comes from `tests/s3proxy-jar` (run by `tests/install-prereqs`; run here too when
//! the jar is missing). The server can be taken down and brought back on the same port with
//! the same data, so tests can play an S3 outage. The process is killed on drop.
//!
//! Its port is below the kernel's ephemeral range and held by a bound, non-listening socket
//! while the server is down (connections are refused, as by a host with nothing on the port):
//! a port picked with `bind(0)` and let go would be handed to the next `bind(0)` in the test
//! process (another test's S3Proxy, worker or stand-in), which then took the "down" server's
//! uploads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use object_store::aws::{AmazonS3, AmazonS3Builder};

use crate::cluster::repo_root;

/// How long the JVM may take to answer (2 shared cores): a hang guard, not a timing assertion.
const STARTUP: Duration = Duration::from_secs(90);

/// One S3Proxy server and its data folder.
pub struct S3Proxy {
    data: tempfile::TempDir,
    port: u16,
    process: Option<Child>,
    /// Holds the port while the server is down.
    placeholder: Option<tokio::net::TcpSocket>,
}

impl S3Proxy {
    pub const BUCKET: &'static str = "callfleet-recordings";
    pub const ACCESS_KEY: &'static str = "callfleet-test-access";
    pub const SECRET_KEY: &'static str = "callfleet-test-secret-0123456789";
    pub const REGION: &'static str = "us-east-1";

    /// A server that is up and has the bucket.
    pub async fn start() -> Result<Self> {
        let mut server = Self::reserve()?;
        server.up().await?;
        Ok(server)
    }

    /// A data folder and a port, with no server yet: S3 is "down" until [`S3Proxy::up`].
    pub fn reserve() -> Result<Self> {
        let data = tempfile::tempdir().context("S3Proxy data folder")?;
        std::fs::create_dir_all(data.path().join("blobs").join(Self::BUCKET))?;
        let (port, placeholder) = reserve_port()?;
        Ok(Self {
            data,
            port,
            process: None,
            placeholder: Some(placeholder),
        })
    }

    /// `http://127.0.0.1:<port>`, whether or not the server is up.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (if it is not running) and waits until it answers.
    pub async fn up(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let jar = jar()?;
        let conf = self.data.path().join("s3proxy.conf");
        std::fs::write(
            &conf,
            format!(
                "s3proxy.endpoint={endpoint}\n\
                 s3proxy.authorization=aws-v2-or-v4\n\
                 s3proxy.identity={id}\n\
                 s3proxy.credential={secret}\n\
                 jclouds.provider=filesystem\n\
                 jclouds.filesystem.basedir={blobs}\n",
                endpoint = self.endpoint(),
                id = Self::ACCESS_KEY,
                secret = Self::SECRET_KEY,
                blobs = self.data.path().join("blobs").display(),
            ),
        )?;
        let log = std::fs::File::create(self.log_path())?;
        // Freed only now, for the server to bind; below the ephemeral range, nothing else in
        // this process picks it meanwhile.
        self.placeholder = None;
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-jar",
            ])
            .arg(&jar)
            .arg("--properties")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting S3Proxy (java)")?;
        self.process = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            if let Some(status) = self
                .process
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.process = None;
                bail!("S3Proxy exited ({status}): {}", self.log());
            }
            // Any HTTP answer (403 for an unsigned request) means it serves.
            if answers_http(self.port).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                self.down();
                bail!("S3Proxy did not answer in {STARTUP:?}: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server; the data stays for the next [`S3Proxy::up`].
    pub fn down(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.placeholder.is_none() {
            self.placeholder = hold(self.port).ok();
        }
    }

    /// A client for the bucket, as the worker would configure one.
    pub fn client(&self) -> Result<AmazonS3> {
        Ok(AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(Self::REGION)
            .with_bucket_name(Self::BUCKET)
            .with_access_key_id(Self::ACCESS_KEY)
            .with_secret_access_key(Self::SECRET_KEY)
            .build()?)
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("s3proxy.log")
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

/// First port to try: below the kernel's ephemeral range (32768 and up by default), so no
/// `bind(0)` returns it; the start is random so concurrent test processes rarely meet.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next port to try in this process.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A free port from [`PORTS`], held by a bound socket.
fn reserve_port() -> Result<(u16, tokio::net::TcpSocket)> {
    let _ = NEXT_PORT.compare_exchange(
        0,
        rand::random_range(PORTS),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..200 {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + port.wrapping_sub(PORTS.start) % (PORTS.end - PORTS.start);
        if let Ok(socket) = hold(port) {
            return Ok((port, socket));
        }
    }
    bail!("no free port in {PORTS:?}")
}

/// Binds `port` on 127.0.0.1 without listening: the port is taken, connections are refused.
fn hold(port: u16) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok(socket)
}

/// Whether something answers HTTP on the port (a plain request over TCP, no client needed).
async fn answers_http(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await,
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 ")
    )
}

/// The S3Proxy jar: `CALLFLEET_S3PROXY_JAR`, else what `tests/s3proxy-jar` prints (it fetches
/// the jar once).
fn jar() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CALLFLEET_S3PROXY_JAR") {
        return Ok(PathBuf::from(path));
    }
    let script = repo_root().join("tests/s3proxy-jar");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !Path::new(&path).is_file() {
        bail!("S3Proxy jar {} not found", path.display());
    }
    Ok(path)
}
