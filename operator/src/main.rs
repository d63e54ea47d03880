//! `callfleet-operator`: `run` (default) reconciles CallClusters and AiPipelines against the
//! cluster; `render -f <file>` prints offline every object the operator would create.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use callfleet_operator::{
    controller::{self, ControllerConfig},
    leader::{LeaderElector, LeaseConfig},
    metrics::{self, Metrics, Readiness},
    render_cmd,
    telemetry::{self, LogFormat},
};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "callfleet-operator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reconcile CallClusters and AiPipelines (the default).
    Run(RunArgs),
    /// Print, without a cluster, every object the operator would create for the CallClusters
    /// and AiPipelines in a multi-document YAML file (`-` reads standard input).
    Render(RenderArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CALLFLEET_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "CALLFLEET_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so only one replica reconciles.
    #[arg(long, env = "CALLFLEET_LEADER_ELECTION", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "CALLFLEET_LEASE_NAME",
        default_value = "callfleet-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, else `<hostname>_<pid>`).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// A leader that cannot renew for this long stops reconciling.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often the leader renews and a standby retries.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// CallClusters reconciled at once.
    #[arg(long, env = "CALLFLEET_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Log output format.
    #[arg(long, env = "CALLFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// Multi-document YAML with CallCluster(s), AiPipeline(s) and optionally Secrets.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

/// `500ms`, `15s`, `2m`: the Lease timings.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 15s, got {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("unknown duration unit in {s:?} (use ms, s or m)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Render(args)) => render(args),
        Some(Command::Run(args)) => run_blocking(args),
        None => run_blocking(cli.run),
    }
}

fn render(args: RenderArgs) -> ExitCode {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(anyhow::Error::from)
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))
    };
    let result = text.and_then(|t| render_cmd::render_manifests(&t).map_err(anyhow::Error::from));
    match result {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The leader must stop before its lease can expire, and retry several times before that.
fn check_lease_timings(lease: Duration, renew: Duration, retry: Duration) -> Result<(), String> {
    if retry.is_zero() || retry >= renew || renew >= lease {
        return Err(format!(
            "lease timings must satisfy 0 < --retry-period ({retry:?}) < --renew-deadline ({renew:?}) < --lease-duration ({lease:?})"
        ));
    }
    Ok(())
}

fn run_blocking(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
    if let Err(e) = check_lease_timings(args.lease_duration, args.renew_deadline, args.retry_period)
    {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // kube's errors already spell out their own causes: one level is enough.
            match e.chain().nth(1) {
                Some(cause) => tracing::error!(error = %e, %cause, "operator failed"),
                None => tracing::error!(error = %e, "operator failed"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Wires the pieces: signals -> shutdown token; lease -> `leading`; controllers run for each
/// term of leadership; the HTTP server runs throughout.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (kubeconfig or in-cluster config)")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signals(shutdown.clone()));

    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let server = tokio::spawn(metrics::serve(
        args.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let (leading_tx, mut leading) = watch::channel(!args.leader_election);
    // Cancelled only after the controllers have stopped, so the lease is released last.
    let stop_election = CancellationToken::new();
    let elector = if args.leader_election {
        let config = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            identity: identity.clone(),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        };
        tracing::info!(%identity, lease = %config.name, namespace = %config.namespace, "leader election on; waiting for the lease");
        Some(tokio::spawn(
            LeaderElector::new(client.clone(), config).run(leading_tx, stop_election.clone()),
        ))
    } else {
        drop(leading_tx);
        None
    };

    let config = ControllerConfig {
        namespace: args.namespace.clone(),
        identity,
        concurrency: args.concurrency,
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        metrics.set_leader(true);
        readiness.set_leading(true);
        let term = shutdown.child_token();
        let stop_term = term.clone();
        let mut lost = leading.clone();
        let watch_lease = tokio::spawn(async move {
            // A closed channel means leadership can no longer change (election off).
            if lost.wait_for(|l| !*l).await.is_ok() {
                stop_term.cancel();
            }
        });
        controller::run(
            client.clone(),
            config.clone(),
            metrics.clone(),
            readiness.clone(),
            term,
        )
        .await;
        watch_lease.abort();
        metrics.set_leader(false);
        readiness.set_leading(false);
        if shutdown.is_cancelled() {
            break;
        }
        tracing::warn!("lost leadership; controllers stopped, standing by");
    }

    stop_election.cancel();
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    shutdown.cancel();
    match server.await {
        Ok(result) => result.context("metrics server failed")?,
        Err(e) => tracing::warn!(error = %e, "metrics server task ended abnormally"),
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// First SIGTERM/SIGINT: graceful shutdown. A second one: exit at once.
async fn wait_for_signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if round == 0 {
            tracing::info!("shutdown requested; stopping controllers and releasing the lease");
            shutdown.cancel();
        } else {
            tracing::warn!("second signal; exiting immediately");
            std::process::exit(130);
        }
    }
}

/// Unique per process, so two local replicas never share an identity.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "callfleet-operator".into());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn lease_timings_are_ordered() {
        let s = Duration::from_secs;
        assert!(check_lease_timings(s(15), s(10), s(2)).is_ok());
        assert!(check_lease_timings(s(10), s(10), s(2)).is_err());
        assert!(check_lease_timings(s(15), s(10), s(10)).is_err());
        assert!(check_lease_timings(s(15), s(10), s(0)).is_err());
    }

    #[test]
    fn run_is_the_default_command() {
        let cli = Cli::try_parse_from(["callfleet-operator", "--leader-election", "off"]).unwrap();
        assert!(cli.command.is_none());
        assert!(!cli.run.leader_election);
        let cli = Cli::try_parse_from(["callfleet-operator", "render", "-f", "x.yaml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Render(_))));
        assert!(Cli::try_parse_from(["callfleet-operator", "--leader-election", "maybe"]).is_err());
    }
}
