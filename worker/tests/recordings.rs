//! Call recordings against a real S3-compatible server (S3Proxy from Maven Central) and the
//! OpenAI stand-in: a call ends up in the bucket as a stereo WAV with the caller left and the
//! reply right; an S3 outage never touches the call and the recording follows when S3 is back;
//! a worker killed mid-call leaves its recording in the spool and the next start uploads it.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use callfleet_tests::s3proxy::S3Proxy;
use callfleet_worker::config::RecordingFormat;
use callfleet_worker::media::mulaw;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use support::calls::*;
use support::recording::*;
use support::*;

/// The stand-in speaks its replies as a tone of this pitch; callers here speak 440 Hz.
const REPLY_HZ: f64 = 660.0;

/// A seed call: speak a 440 Hz utterance, hear the whole two-sentence reply, hang up.
async fn call_and_hang_up(w: &TestWorker, call_id: &str) {
    let mut s = connect(&w.url("/ws/call-session")).await;
    send_text(&mut s, start_call(call_id, Some(&token(call_id)))).await;
    wait_for(&mut s, "status", "ready").await;
    say_in_real_time(&mut s, &utterance(440.0, 8_000)).await;
    // One mark per sentence, each after the sentence's last frame.
    let (mut captions, mut marks) = (Vec::new(), 0);
    while marks < 2 {
        let m = next_json(&mut s).await.expect("reply");
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "mark" {
            marks += 1;
        }
        if let Some(t) = m["text"].as_str().filter(|t| !t.is_empty()) {
            captions.push(t.to_owned());
        }
    }
    assert_eq!(
        captions,
        ["I heard tone 440.", "What else can I do for you?"]
    );
    send_text(&mut s, r#"{"type":"end_call"}"#).await;
    assert_eq!(wait_closed(&mut s).await, Some(1000));
}

/// Seed audio frames of 20 ms, one every 20 ms as a carrier sends them: the recording's
/// timeline is the call's clock, so audio sent faster than real time would overlap the reply.
async fn say_in_real_time(s: &mut Socket, samples: &[i16]) {
    let mut clock = tokio::time::interval(std::time::Duration::from_millis(20));
    for frame in samples.chunks(160) {
        clock.tick().await;
        say_seed(s, frame).await;
    }
}

/// Keys in the bucket under `PREFIX` (empty while S3 is down).
async fn the_one_recording(s3: &S3Proxy) -> (String, Vec<u8>) {
    eventually(async || !keys(s3).await.is_empty()).await;
    let keys = keys(s3).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let client = s3.client().expect("client");
    let object = client
        .get(&ObjectPath::from(keys[0].as_str()))
        .await
        .expect("get recording");
    let bytes = object.bytes().await.expect("body").to_vec();
    (keys[0].clone(), bytes)
}

/// `<prefix>YYYY/MM/DD/<call id>-<HHMMSSmmm>.wav`
fn assert_key(key: &str, call_id: &str) {
    let rest = key.strip_prefix(PREFIX).unwrap_or_else(|| panic!("{key}"));
    let parts: Vec<&str> = rest.split('/').collect();
    assert_eq!(parts.len(), 4, "{key}");
    assert!(
        parts[..3]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{key}"
    );
    let name = parts[3]
        .strip_prefix(&format!("{call_id}-"))
        .and_then(|n| n.strip_suffix(".wav"))
        .unwrap_or_else(|| panic!("{key}"));
    assert_eq!(name.len(), 9, "{key}");
}

/// The loud stretches of one channel: how long they last, and their pitch from zero crossings.
#[derive(Debug)]
struct Voice {
    loud_ms: u32,
    hz: f64,
    first_loud: usize,
    last_loud: usize,
}

fn voice(samples: &[i16]) -> Voice {
    let mut loud_blocks = 0u32;
    let mut crossings = 0usize;
    let (mut first_loud, mut last_loud) = (usize::MAX, 0);
    for (i, block) in samples.chunks_exact(160).enumerate() {
        let energy: f64 = block.iter().map(|&s| f64::from(s).powi(2)).sum();
        if (energy / 160.0).sqrt() < 1_000.0 {
            continue;
        }
        loud_blocks += 1;
        first_loud = first_loud.min(i * 160);
        last_loud = i * 160 + 159;
        crossings += block
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
    }
    let seconds = f64::from(loud_blocks) * 0.02;
    Voice {
        loud_ms: loud_blocks * 20,
        hz: if seconds > 0.0 {
            crossings as f64 / 2.0 / seconds
        } else {
            0.0
        },
        first_loud,
        last_loud,
    }
}

fn split(stereo: &[i16]) -> (Vec<i16>, Vec<i16>) {
    (
        stereo.iter().step_by(2).copied().collect(),
        stereo.iter().skip(1).step_by(2).copied().collect(),
    )
}

fn assert_pitch(v: &Voice, hz: f64) {
    assert!((v.hz - hz).abs() < 40.0, "expected about {hz} Hz: {v:?}");
}

/// Caller left: the 600 ms utterance at 440 Hz. Assistant right: the 2.7 s reply at 660 Hz,
/// after the caller spoke.
fn assert_conversation(left: &[i16], right: &[i16]) {
    let caller = voice(left);
    let reply = voice(right);
    assert_pitch(&caller, 440.0);
    assert_pitch(&reply, REPLY_HZ);
    assert!((500..=700).contains(&caller.loud_ms), "{caller:?}");
    assert!(reply.loud_ms >= 2_000, "{reply:?}");
    assert!(reply.first_loud > caller.last_loud, "{caller:?} {reply:?}");
}

#[tokio::test]
async fn a_call_is_uploaded_as_a_stereo_wav() {
    let s3 = S3Proxy::start().await.expect("S3Proxy");
    let spool = tempfile::tempdir().unwrap();
    let (_standin, w) = setup_with("", |a| {
        record_to(a, &s3, spool.path(), RecordingFormat::Wav)
    })
    .await;
    call_and_hang_up(&w, "rec-wav").await;

    let (key, bytes) = the_one_recording(&s3).await;
    assert_key(&key, "rec-wav");
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8_000, 16)
    );
    let stereo: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
    let (left, right) = split(&stereo);
    assert_conversation(&left, &right);

    let metrics = settled_after_one_upload(&w).await;
    assert!(
        metrics.contains("callfleet_recording_frames_dropped_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("callfleet_recording_errors_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "callfleet_recording_uploaded_bytes_total {}",
            stereo.len() * 2 + 44
        )),
        "{metrics}"
    );
    assert_spool_empty(spool.path());
    w.stop().await;
}

#[tokio::test]
async fn s3_down_during_the_call_then_back() {
    let mut s3 = S3Proxy::reserve().expect("port and data");
    let spool = tempfile::tempdir().unwrap();
    let (_standin, w) = setup_with("", |a| {
        record_to(a, &s3, spool.path(), RecordingFormat::WavMulaw)
    })
    .await;
    // The whole call runs while S3 is unreachable, exactly as it would without recordings.
    call_and_hang_up(&w, "rec-outage").await;
    let url = w.http("/metrics");
    eventually(async || {
        let (_, m) = get_text(&url, None).await;
        m.contains("callfleet_recording_spool_backlog 1")
            && !m.contains("callfleet_recording_upload_failures_total 0")
    })
    .await;
    assert_eq!(
        w.worker()
            .ctx
            .metrics
            .errors_with(callfleet_worker::protocols::ErrorCode::InternalError),
        0
    );

    s3.up().await.expect("S3 back");
    let (key, bytes) = the_one_recording(&s3).await;
    assert_key(&key, "rec-outage");
    // µ-law WAV: format tag 7, stereo, 8 kHz, 8 bits, and a fact chunk.
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 7);
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8_000);
    assert_eq!(&bytes[38..42], b"fact");
    assert_eq!(&bytes[50..54], b"data");
    let data_len = u32::from_le_bytes(bytes[54..58].try_into().unwrap()) as usize;
    assert_eq!(data_len, bytes.len() - 58);
    let stereo: Vec<i16> = bytes[58..]
        .iter()
        .map(|&c| mulaw::decode_sample(c))
        .collect();
    let (left, right) = split(&stereo);
    assert_conversation(&left, &right);

    settled_after_one_upload(&w).await;
    assert_spool_empty(spool.path());
    w.stop().await;
}

/// The worker binary, configured only through the env vars the operator renders.
fn spawn_worker(dir: &Path, spool: &Path, s3: &S3Proxy, port: u16) -> ChildWorker {
    let child = Command::new(env!("CARGO_BIN_EXE_callfleet-worker"))
        .env("CALLFLEET_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLFLEET_PIPELINE_FILE", dir.join("pipeline.json"))
        .env("CALLFLEET_TOKEN_SECRET", SECRET)
        .env("CALLFLEET_PROVIDER_API_KEY_FILE", dir.join("none"))
        .env("OPENAI_API_KEY", "sk-test")
        .env("CALLFLEET_RECORDINGS_ENABLED", "true")
        .env("CALLFLEET_RECORDINGS_ENDPOINT", s3.endpoint())
        .env("CALLFLEET_RECORDINGS_REGION", S3Proxy::REGION)
        .env("CALLFLEET_RECORDINGS_BUCKET", S3Proxy::BUCKET)
        .env("CALLFLEET_RECORDINGS_PREFIX", PREFIX)
        .env("CALLFLEET_RECORDINGS_FORMAT", "wav")
        .env("AWS_ACCESS_KEY_ID", S3Proxy::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3Proxy::SECRET_KEY)
        .env("CALLFLEET_RECORDINGS_SPOOL_DIR", spool)
        .env("CALLFLEET_RECORDINGS_RETRY_MAX_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    ChildWorker(child)
}

async fn wait_ready(port: u16) {
    eventually(async || {
        reqwest::get(format!("http://127.0.0.1:{port}/ready"))
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
}

#[tokio::test]
async fn a_worker_killed_mid_call_uploads_the_recording_on_its_next_start() {
    let s3 = S3Proxy::start().await.expect("S3Proxy");
    let standin = callfleet_tests::openai_standin::OpenAiStandin::start(
        callfleet_tests::openai_standin::StandinConfig::instant(),
    )
    .await
    .expect("stand-in");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::write(
        dir.path().join("pipeline.json"),
        pipeline_json(&standin.base_url(), 1, TURNS),
    )
    .unwrap();

    let port = free_port();
    let mut worker = spawn_worker(dir.path(), &spool, &s3, port);
    wait_ready(port).await;
    let mut s = connect(&format!("ws://127.0.0.1:{port}/ws/call-session")).await;
    send_text(&mut s, start_call("rec-killed", Some(&token("rec-killed")))).await;
    wait_for(&mut s, "status", "ready").await;
    // Three seconds of speech, in real time as a carrier sends it: more than the recorder's
    // write buffer, so most of it is on disk when the worker dies.
    let mut speech = tone(440.0, 8_000, 3_000);
    speech.extend(vec![0i16; 4_000]);
    say_in_real_time(&mut s, &speech).await;
    seed_captions(&mut s, 1).await;
    worker.0.kill().expect("kill -9 the worker");
    let _ = worker.0.wait();
    drop(s);
    let early = keys(&s3).await;
    assert!(
        early.is_empty(),
        "nothing uploaded before the restart: {early:?}"
    );

    let port = free_port();
    let _worker = spawn_worker(dir.path(), &spool, &s3, port);
    wait_ready(port).await;
    let (key, bytes) = the_one_recording(&s3).await;
    assert_key(&key, "rec-killed");
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
    let stereo: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
    let (left, _) = split(&stereo);
    let caller = voice(&left);
    assert_pitch(&caller, 440.0);
    assert!(caller.loud_ms >= 1_500, "{caller:?}");
    eventually(async || {
        let (_, m) = get_text(&format!("http://127.0.0.1:{port}/metrics"), None).await;
        m.contains("callfleet_recordings_uploaded_total 1")
            && m.contains("callfleet_recording_spool_backlog 0")
    })
    .await;
    assert_spool_empty(&spool);
}

/// Waits until the worker has nothing left to record or upload; checks it uploaded exactly one
/// recording and returns its metrics text.
async fn settled_after_one_upload(w: &TestWorker) -> String {
    let recordings = w.worker().ctx.recordings.clone().expect("recording");
    eventually(async || recordings.is_settled()).await;
    let (_, metrics) = get_text(&w.http("/metrics"), None).await;
    for line in [
        "callfleet_recordings_uploaded_total 1",
        "callfleet_recording_spool_backlog 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    metrics
}

#[tokio::test]
async fn a_long_recording_goes_up_in_parts_streamed_from_its_file() {
    use callfleet_worker::recording::{Finished, PART_SIZE, upload};
    let s3 = S3Proxy::start().await.expect("S3Proxy");
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("long.wav");
    // Two full parts and a short last one; content that shows any reordering.
    let len = PART_SIZE * 2 + 12_345;
    let body: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&wav, &body).unwrap();
    let finished = Finished {
        stem: "long".into(),
        key: format!("{PREFIX}long.wav"),
        wav,
    };
    let client = s3.client().expect("client");
    let sent = upload(&client, &finished, PART_SIZE).await.expect("upload");
    assert_eq!(sent, len as u64);
    let object = client
        .get(&ObjectPath::from(finished.key.as_str()))
        .await
        .expect("get");
    assert_eq!(object.meta.size, len as u64, "size of the assembled object");
    // An S3 multipart ETag ends in -<parts>.
    let etag = object.meta.e_tag.clone().unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
    let got = object.bytes().await.expect("body");
    assert!(got == body, "the object is the file, byte for byte");
}
