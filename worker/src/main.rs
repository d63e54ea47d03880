//! `callfleet-worker`: serve calls, or mint a call token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tracing_subscriber::EnvFilter;

use callfleet_worker::admission::{TokenSecret, mint_token};
use callfleet_worker::config::{Cli, Command, LogFormat, MediaRuntime, ServeArgs};
use callfleet_worker::media_thread;

/// mimalloc instead of glibc's malloc: every call allocates small, short-lived buffers for each
/// 20 ms frame, and glibc's allocator was 9% of the worker's CPU at 1,000 calls.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => {
            let secret = TokenSecret::load(
                &cli.serve.token_secret_file,
                cli.serve.token_secret.as_deref(),
            )?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            println!(
                "{}",
                mint_token(&secret, &args.call_id, now + args.ttl_seconds)
            );
            Ok(())
        }
        Some(Command::Serve) | None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    // With single-threaded media runtimes this is the first one, which also runs the pipeline
    // watcher, recordings and the drain; `server::start` starts the others.
    let runtime = match args.media_runtime() {
        MediaRuntime::WorkStealing(threads) => {
            media_thread::work_stealing(threads, args.event_batch())?
        }
        MediaRuntime::PerThread(_) => media_thread::runtime(args.event_batch())?,
    };
    runtime.block_on(async move {
        let worker = callfleet_worker::server::start(&args).await?;
        shutdown_signal().await;
        tracing::info!(seconds = args.drain_seconds, "SIGTERM: draining");
        worker.drain(Duration::from_secs(args.drain_seconds)).await;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
