//! `callfleet-call` end to end: the real binary places calls from a WAV file to a real worker
//! (in-process) answering through the OpenAI stand-in, over each protocol, and reports reply
//! audio, transcript and per-turn latency; refusals exit with the refusal's code. No timing is
//! asserted: latency lines are only checked to be there.

mod support;

use std::path::Path;
use std::process::Output;

use support::calls::*;
use support::*;

const CLIENT: &str = env!("CARGO_BIN_EXE_callfleet-call");

/// A 44.1 kHz stereo WAV (so the client must convert it): silence, a 440 Hz tone, silence.
fn write_caller_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for i in 0..44_100 * 2 {
        let t = f64::from(i) / 44_100.0;
        let value = if (0.3..1.3).contains(&t) {
            (0.3 * (std::f64::consts::TAU * 440.0 * t).sin() * 32767.0) as i16
        } else {
            0
        };
        writer.write_sample(value).expect("left");
        writer.write_sample(value).expect("right");
    }
    writer.finalize().expect("finalize wav");
}

async fn call(url: &str, wav: &Path, out: &Path, transcript: &Path, extra: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(CLIENT);
    command
        .args([
            "--url",
            url,
            "--token-secret",
            SECRET,
            "--quiet-seconds",
            "0.3",
        ])
        .args(["--max-wait-seconds", "15"])
        .arg("--wav")
        .arg(wav)
        .arg("--out")
        .arg(out)
        .arg("--transcript")
        .arg(transcript)
        .args(extra)
        .env_remove("CALLFLEET_TOKEN_SECRET");
    let output = tokio::time::timeout(PATIENCE * 2, command.output())
        .await
        .expect("the client finished (hang guard)")
        .expect("the client ran");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_every_protocol_and_writes_reply_and_transcript() {
    let (_standin, worker) = setup("").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("caller.wav");
    write_caller_wav(&wav);
    let base = format!("ws://{}", worker.worker().addr);
    let cases: [(&str, &[&str], u32); 5] = [
        ("twilio", &[], 8_000),
        ("seed", &[], 8_000),
        (
            "seed",
            &[
                "--encoding",
                "pcm16",
                "--rate",
                "16000",
                "--token-via",
                "query",
            ],
            16_000,
        ),
        ("freeswitch", &["--token-via", "header"], 8_000),
        ("freeswitch", &["--streaming", "--rate", "16000"], 16_000),
    ];
    for (index, (protocol, extra, rate)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("reply-{index}.wav"));
        let transcript = dir.path().join(format!("transcript-{index}.txt"));
        let args = [&["--protocol", protocol][..], extra].concat();
        let output = call(&base, &wav, &out, &transcript, &args).await;
        assert!(
            output.status.success(),
            "{protocol} {extra:?}: {:?}",
            output.status
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("turn 1: caller audio ended at"), "{stderr}");

        let reply = hound::WavReader::open(&out).expect("reply wav");
        assert_eq!(reply.spec().sample_rate, rate, "{protocol} {extra:?}");
        assert_eq!(reply.spec().channels, 1);
        assert!(reply.len() > 0);

        let text = std::fs::read_to_string(&transcript).expect("transcript");
        let carries_text = protocol != "twilio" && !extra.contains(&"--streaming");
        if carries_text {
            // The stand-in heard the tone and answered in two sentences.
            assert_eq!(
                text, "assistant: I heard tone 440.\nassistant: What else can I do for you?\n",
                "{protocol} {extra:?}"
            );
        } else {
            assert!(text.is_empty(), "{protocol}: {text}");
        }
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_clear_errors_and_exit_codes() {
    let (_standin, worker) = setup("").await;
    let (_standin_full, full) = setup_with("", |a| a.max_calls = 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("caller.wav");
    write_caller_wav(&wav);
    let out = dir.path().join("reply.wav");
    let transcript = dir.path().join("t.txt");
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let base = format!("ws://{}", worker.worker().addr);
    for protocol in ["twilio", "seed", "freeswitch"] {
        let forged = call(
            &base,
            &wav,
            &out,
            &transcript,
            &["--protocol", protocol, "--token", "c1.9999999999.bad"],
        )
        .await;
        assert_eq!(forged.status.code(), Some(4), "{protocol}");
        assert!(
            stderr(&forged).contains("refused the call token"),
            "{}",
            stderr(&forged)
        );
    }

    let full_url = format!("ws://{}", full.worker().addr);
    let refused = call(&full_url, &wav, &out, &transcript, &[]).await;
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        stderr(&refused).contains("the worker has no room"),
        "{}",
        stderr(&refused)
    );

    let bad_url = call("http://127.0.0.1:1", &wav, &out, &transcript, &[]).await;
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(stderr(&bad_url).contains("bad worker URL"));

    // A port nobody listens on: the client's own listener, closed again.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let unreachable = call(
        &format!("ws://127.0.0.1:{port}"),
        &wav,
        &out,
        &transcript,
        &[],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(stderr(&unreachable).contains("cannot connect"));
    assert!(!out.exists(), "no reply file from failed calls");
    worker.stop().await;
    full.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_a_wss_url_through_a_private_ca_with_ca_file() {
    let (_standin, worker) = setup("").await;
    let pki = callfleet_tests::tls::TestPki::generate().expect("test CA");
    let front = callfleet_tests::tls::TlsFront::start(&pki, worker.worker().addr)
        .await
        .expect("TLS front");
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("caller.wav");
    write_caller_wav(&wav);
    let (out, transcript) = (dir.path().join("reply.wav"), dir.path().join("t.txt"));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");
    let ca = ca.to_str().expect("utf-8 path");
    let url = format!("wss://{}", front.addr());
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Not trusted by the public roots: a connection error naming the certificate.
    let untrusted = call(&url, &wav, &out, &transcript, &["--protocol", "seed"]).await;
    assert_eq!(untrusted.status.code(), Some(3));
    assert!(
        stderr(&untrusted).contains("certificate"),
        "{}",
        stderr(&untrusted)
    );

    let trusted = call(
        &url,
        &wav,
        &out,
        &transcript,
        &["--protocol", "seed", "--ca-file", ca],
    )
    .await;
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    assert_eq!(
        std::fs::read_to_string(&transcript).expect("transcript"),
        "assistant: I heard tone 440.\nassistant: What else can I do for you?\n"
    );

    // A file that holds no certificate is a usage error, before any connection.
    let wav_as_ca = wav.to_str().expect("utf-8 path");
    let bad = call(&url, &wav, &out, &transcript, &["--ca-file", wav_as_ca]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--ca-file"), "{}", stderr(&bad));
    worker.stop().await;
}
