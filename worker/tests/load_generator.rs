//! The load generator behind `benches/worker-load` (`callfleet_tests::loadgen`), run briefly
//! against a real worker in-process and the OpenAI stand-in: a few Twilio calls speak, every turn
//! is answered, and replies are timed by their arrival at the generator's sockets. A smoke test
//! of the benchmark tool, so a broken generator is caught here and not in the middle of a
//! benchmark; it measures nothing and asserts no timing.

mod support;

use callfleet_tests::loadgen::{LoadConfig, run};
use clap::Parser;

use support::calls::*;
use support::*;

#[tokio::test]
async fn a_short_run_answers_every_turn_and_times_replies_by_arrival() {
    let (_standin, worker) = setup("").await;
    let url = worker.url("");
    // Cycles of 600 ms of tone and 2.4 s of silence: the worker's 300 ms end-of-turn window
    // (`TURNS`) and the stand-in's instant answer fit in the silence.
    let args = [
        "callfleet-loadgen",
        "--url",
        url.as_str(),
        "--calls",
        "3",
        "--ramp-batch",
        "3",
        "--settle",
        "0.5",
        "--duration",
        "6",
        "--speech-ms",
        "600",
        "--silence-ms",
        "2400",
        "--turn-window-ms",
        "300",
        "--token-secret",
        SECRET,
    ];
    let config = LoadConfig::try_parse_from(args).expect("arguments");
    let report = run(config).await.expect("a load run");
    let calls = &report.calls;

    assert_eq!(
        (calls.connected, calls.sustained),
        (3, 3),
        "failures: {:?}",
        calls.failures
    );
    assert!(calls.turns >= 3, "each call spoke at least once: {calls:?}");
    assert_eq!(calls.turns_answered, calls.turns, "{calls:?}");
    assert!(calls.reply_frames > 0);
    assert_eq!(calls.reply_frames_misfit, 0, "every reply frame is 20 ms");
    // A turn is counted when the next speech closes it; one answered near the end of the
    // window may have its first audio timed without being closed yet.
    assert!(calls.ttfa.count as u64 >= calls.turns_answered);
    assert_eq!(calls.read_delay.count, calls.ttfa.count);
    assert!(calls.frames_sent > 0);
    worker.stop().await;
}
