//! The worker binary as a child process: `token` mints what the worker accepts, and SIGTERM
//! drains (ready off, new calls refused, live calls finish, then a clean exit).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;

const BIN: &str = env!("CARGO_BIN_EXE_callfleet-worker");

#[tokio::test]
async fn token_subcommand_and_sigterm_drain() {
    token_and_drain(&[]).await;
}

/// The same with four single-threaded media runtimes: the drain covers calls on every thread.
#[tokio::test]
async fn sigterm_drain_with_media_threads() {
    token_and_drain(&[("CALLFLEET_MEDIA_THREADS", "4")]).await;
}

/// The same with event batching on the main runtime: a drain still finishes.
#[tokio::test]
async fn sigterm_drain_with_event_batching() {
    token_and_drain(&[("CALLFLEET_EVENT_BATCH_US", "1000")]).await;
}

async fn token_and_drain(settings: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.json");
    std::fs::write(&pipeline, pipeline_json("http://127.0.0.1:9/v1", 1, "")).unwrap();
    let secret_file = dir.path().join("token-secret");
    std::fs::write(&secret_file, SECRET).unwrap();

    let minted = Command::new(BIN)
        .args(["token", "--call-id", "proc-1", "--ttl-seconds", "60"])
        .env("CALLFLEET_TOKEN_SECRET_FILE", &secret_file)
        .output()
        .expect("run token");
    assert!(minted.status.success());
    let minted = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert!(minted.starts_with("proc-1."), "{minted}");

    let port = free_port();
    let child = Command::new(BIN)
        .env("CALLFLEET_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLFLEET_PIPELINE_FILE", &pipeline)
        .env("CALLFLEET_TOKEN_SECRET_FILE", &secret_file)
        .env("CALLFLEET_PROVIDER_API_KEY_FILE", dir.path().join("none"))
        .env("CALLFLEET_DRAIN_SECONDS", "60")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let mut worker = ChildWorker(child);
    let base = format!("127.0.0.1:{port}");
    eventually(async || {
        reqwest::get(format!("http://{base}/ready"))
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;

    let mut call = connect(&format!("ws://{base}/ws/call-session?token={minted}")).await;
    send_text(&mut call, start_call("proc-1", None)).await;
    wait_for(&mut call, "status", "ready").await;

    let pid = worker.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    eventually(async || {
        reqwest::get(format!("http://{base}/ready"))
            .await
            .is_ok_and(|r| r.status().as_u16() == 503)
    })
    .await;
    match connect_async(format!("ws://{base}/ws/call-session")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected 503 while draining, got {other:?}"),
    }
    // The live call is still served, and when it ends the worker exits cleanly.
    send_text(&mut call, r#"{"type":"teleport"}"#).await;
    let error = wait_for(&mut call, "type", "error").await;
    assert_eq!(error["code"], "BAD_REQUEST");
    send_text(&mut call, r#"{"type":"end_call"}"#).await;
    assert_eq!(wait_closed(&mut call).await, Some(1000));
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = worker.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("worker exited after its last call");
    assert!(status.success(), "{status}");
}
