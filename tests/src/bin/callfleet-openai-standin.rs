//! The OpenAI stand-in as a process, for the local stack and benchmarks:
//! `callfleet-openai-standin --listen 127.0.0.1:9090 [--tls-dir DIR] [--threads 1]
//! [--chat-first-token-ms 300]`.

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
    /// Runtime threads. One by default: the stand-in shares the machine with the worker it
    /// serves, and a single-threaded runtime does the same work for 10–25% less CPU than work
    /// stealing over two cores (no cross-thread wake-ups; BENCHMARKS.md, 2026-11-30 afternoon).
    /// More threads for loads one core cannot serve.
    #[arg(long, env = "STANDIN_THREADS", default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    config: StandinConfig,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = match args.threads {
        0 => anyhow::bail!("--threads must be at least 1"),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        threads => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
