//! The OpenAI stand-in as a process, for the local stack and benchmarks:
//! `callfleet-openai-standin --listen 127.0.0.1:9090 [--tls-dir DIR] [--chat-first-token-ms 300]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use callfleet_tests::openai_standin::{OpenAiStandin, StandinConfig};
use callfleet_tests::tls::TestPki;

/// mimalloc: the stand-in shares the machine with the worker under load: its allocations are
/// HTTP requests and streamed chunks, cheaper under mimalloc than glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "callfleet-openai-standin",
    about = "Local OpenAI-compatible server (tests, local stack)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "STANDIN_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Serve HTTPS (and `wss://` realtime) with the certificate in this folder: `server.pem`,
    /// `server-key.pem`, signed by `ca.pem` (a worker's `provider.caBundle`). Generated there
    /// first if `server.pem` is missing.
    #[arg(long, env = "STANDIN_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    #[command(flatten)]
    config: StandinConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let standin = match &args.tls_dir {
        None => OpenAiStandin::start_on(args.config, args.listen).await?,
        Some(dir) => {
            let tls = TestPki::in_dir(dir)?.server_config()?;
            OpenAiStandin::start_tls(args.config, args.listen, tls).await?
        }
    };
    println!("openai stand-in: base URL {}", standin.base_url());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    standin.shutdown().await;
    Ok(())
}
