//! The OpenAI stand-in as a process, for the local stack:
//! `callfleet-openai-standin --listen 127.0.0.1:9090 [--chat-first-token-ms 300 ...]`.

use std::net::SocketAddr;

use clap::Parser;

use callfleet_tests::openai_standin::{OpenAiStandin, StandinConfig};

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
    let standin = OpenAiStandin::start_on(args.config, args.listen).await?;
    println!("openai stand-in: base URL {}", standin.base_url());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    standin.shutdown().await;
    Ok(())
}
