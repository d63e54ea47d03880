//! Worker metrics: Prometheus text for scrapers and the seed's JSON summary for humans.
//!
//! Everything is atomics or prometheus-client's lock-light metrics, recorded once per call or
//! per turn, never per frame.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::protocols::ErrorCode;
use crate::session::playout::Gaps;

/// Latency buckets from 5 ms to about 40 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Buckets from 0.25 ms to about 1 s for the latency the worker itself adds to a turn.
fn overhead_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 1.5, 21))
}

/// Buckets from 0.25 ms to about 16 s for provider round trips (loopback to another continent).
fn round_trip_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// Per-endpoint histograms of provider request sent → response headers received.
pub type ProviderRoundTrips =
    Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

/// Uploads made while the caller spoke, by how they ended (see `providers::openai::live`).
pub type LiveUploadOutcomes = Family<[(&'static str, &'static str); 1], Counter>;

/// Utterances sent whole to speech-to-text, by the WAV encoding that carried them.
pub type UploadEncodings = Family<[(&'static str, &'static str); 1], Counter>;

/// Replies prepared during a pause in the caller's turn, by outcome.
pub type EarlyReplyOutcomes = Family<[(&'static str, &'static str); 1], Counter>;

/// All worker metrics.
pub struct Metrics {
    registry: Registry,
    active_calls: Gauge,
    calls_total: Counter,
    /// Calls admitted per media thread: how evenly the kernel spreads calls over the threads.
    calls_by_thread: Family<[(&'static str, String); 1], Counter>,
    errors: Family<[(&'static str, &'static str); 1], Counter>,
    pub reload_errors: Counter,
    pub first_audio: Histogram,
    pub stt_latency: Histogram,
    pub llm_first_token: Histogram,
    pub tts_first_byte: Histogram,
    /// Provider request sent → response headers, by endpoint: the network, the provider's
    /// front door and this worker's HTTP client, which the stage waits above include and
    /// `turn_overhead` leaves out.
    pub provider_round_trips: ProviderRoundTrips,
    /// End of caller speech to first reply audio, less the time spent waiting on providers.
    pub turn_overhead: Histogram,
    pub barge_ins: Counter,
    /// Pauses in reading a speech stream while the call held plenty of unplayed audio (the
    /// provider streaming faster than real time).
    pub speech_read_rests: Counter,
    /// Realtime sessions lost mid-call and opened again with the conversation so far.
    pub realtime_reconnects: Counter,
    /// Utterance uploads made while the caller spoke, by outcome.
    pub stt_live_uploads: LiveUploadOutcomes,
    /// Utterances sent whole, by encoding (`mulaw` or `pcm`).
    pub stt_upload_encodings: UploadEncodings,
    /// Replies prepared during a pause in the caller's turn, by outcome.
    early_replies: EarlyReplyOutcomes,
    /// How late each media runtime's 100 ms probe timer fired (load shedding's signal).
    pub event_loop_lag: Histogram,
    /// Media runtimes currently shedding new calls.
    pub overloaded_runtimes: Gauge,
    /// Reply audio frames a carrier was too far behind to be sent.
    pub reply_frames_dropped: Counter,
    /// Replies whose audio ran dry before they were complete (a pause the caller heard), by
    /// cause.
    reply_gaps: Family<[(&'static str, &'static str); 1], Counter>,
    /// Turns the assistant answered with nothing to say, by cause: the caller heard silence.
    unspoken_replies: Family<[(&'static str, &'static str); 1], Counter>,
    pub recordings: RecordingMetrics,
    calls_ended: AtomicU64,
    call_seconds_sum_ms: AtomicU64,
    calls_with_error: AtomicU64,
    first_audio_sum_us: AtomicU64,
    first_audio_count: AtomicU64,
}

/// Recording counters (`callfleet_recording*`): kept per worker, updated per recording or per
/// dropped frame, never per written frame.
#[derive(Default)]
pub struct RecordingMetrics {
    /// Recordings the bucket has.
    pub uploaded: Counter,
    /// Upload attempts that failed (each is retried).
    pub upload_failures: Counter,
    /// WAV bytes uploaded.
    pub uploaded_bytes: Counter,
    /// Frames not recorded because a recorder fell behind (or could not start).
    pub frames_dropped: Counter,
    /// Spool failures: a recording that could not start, be written, assembled or removed.
    pub errors: Counter,
    /// Finished recordings in the spool waiting for upload.
    pub backlog: Gauge,
}

impl RecordingMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "callfleet_recordings_uploaded",
            "Call recordings uploaded to the bucket",
            self.uploaded.clone(),
        );
        registry.register(
            "callfleet_recording_upload_failures",
            "Recording upload attempts that failed (each is retried)",
            self.upload_failures.clone(),
        );
        registry.register(
            "callfleet_recording_uploaded_bytes",
            "WAV bytes uploaded",
            self.uploaded_bytes.clone(),
        );
        registry.register(
            "callfleet_recording_frames_dropped",
            "Audio frames not recorded because the recorder fell behind or failed",
            self.frames_dropped.clone(),
        );
        registry.register(
            "callfleet_recording_errors",
            "Recordings that could not be started, written, assembled or cleaned up",
            self.errors.clone(),
        );
        registry.register(
            "callfleet_recording_spool_backlog",
            "Finished recordings in the spool waiting for upload",
            self.backlog.clone(),
        );
    }
}

/// The seed's `/metrics` JSON.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_calls: u64,
    pub active_calls: u64,
    /// Seconds, over ended calls.
    pub average_call_duration: f64,
    /// Fraction of calls that reported at least one error.
    pub error_rate: f64,
    /// Milliseconds from end of caller speech to first reply audio sent.
    pub average_latency: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let active_calls = Gauge::default();
        let calls_total = Counter::default();
        let calls_by_thread = Family::default();
        let errors = Family::default();
        let reload_errors = Counter::default();
        let (first_audio, stt_latency, llm_first_token, tts_first_byte) = (
            latency_histogram(),
            latency_histogram(),
            latency_histogram(),
            latency_histogram(),
        );
        let provider_round_trips: ProviderRoundTrips =
            Family::new_with_constructor(round_trip_histogram);
        let turn_overhead = overhead_histogram();
        let barge_ins = Counter::default();
        let speech_read_rests = Counter::default();
        let realtime_reconnects = Counter::default();
        let stt_live_uploads = LiveUploadOutcomes::default();
        let stt_upload_encodings = UploadEncodings::default();
        let early_replies = EarlyReplyOutcomes::default();
        let event_loop_lag = overhead_histogram();
        let overloaded_runtimes = Gauge::default();
        let reply_frames_dropped = Counter::default();
        let reply_gaps = Family::default();
        let unspoken_replies = Family::default();
        registry.register(
            "callfleet_active_calls",
            "Calls in progress on this worker",
            active_calls.clone(),
        );
        registry.register(
            "callfleet_calls",
            "Calls admitted since start",
            calls_total.clone(),
        );
        registry.register(
            "callfleet_media_thread_calls",
            "Calls admitted since start, by the media thread serving them",
            calls_by_thread.clone(),
        );
        registry.register(
            "callfleet_errors",
            "Errors reported to callers, by code",
            errors.clone(),
        );
        registry.register(
            "callfleet_pipeline_reload_errors",
            "Pipeline config files that failed to load (the previous version stays in use)",
            reload_errors.clone(),
        );
        registry.register(
            "callfleet_turn_first_audio_seconds",
            "End of caller speech to first reply audio byte sent",
            first_audio.clone(),
        );
        registry.register(
            "callfleet_stt_latency_seconds",
            "Speech-to-text request to final transcript",
            stt_latency.clone(),
        );
        registry.register(
            "callfleet_llm_first_token_seconds",
            "Chat completion request to first token",
            llm_first_token.clone(),
        );
        registry.register(
            "callfleet_tts_first_byte_seconds",
            "Speech request to first audio byte",
            tts_first_byte.clone(),
        );
        registry.register(
            "callfleet_provider_response_headers_seconds",
            "Provider request sent to response headers received, by endpoint (transcriptions, \
             chat, speech): the network, the provider's front door and the worker's HTTP client",
            provider_round_trips.clone(),
        );
        registry.register(
            "callfleet_turn_overhead_seconds",
            "End of caller speech to first reply audio byte sent, less the turn's waits on \
             speech-to-text, the chat model's first sentence and speech's first byte: the \
             latency the worker itself adds",
            turn_overhead.clone(),
        );
        registry.register(
            "callfleet_event_loop_lag_seconds",
            "How late a media runtime's 100 ms probe timer fired: how long frames wait before \
             the worker reads them",
            event_loop_lag.clone(),
        );
        registry.register(
            "callfleet_overloaded_runtimes",
            "Media runtimes refusing new calls because their event loop is behind",
            overloaded_runtimes.clone(),
        );
        registry.register(
            "callfleet_barge_ins",
            "Replies interrupted by caller speech",
            barge_ins.clone(),
        );
        registry.register(
            "callfleet_speech_read_rests",
            "Pauses in reading a speech stream while the call held plenty of unplayed audio",
            speech_read_rests.clone(),
        );
        registry.register(
            "callfleet_realtime_reconnects",
            "Realtime provider sessions lost mid-call and opened again with the conversation so far",
            realtime_reconnects.clone(),
        );
        registry.register(
            "callfleet_stt_live_uploads",
            "Utterances uploaded while the caller spoke, by outcome: heard (answered by that request), failed (sent whole after the request failed), given_up (sent whole after the upload fell behind), refused (the server refused the chunked request; sent whole, and whole from then on)",
            stt_live_uploads.clone(),
        );
        registry.register(
            "callfleet_stt_uploads",
            "Utterances sent whole to speech-to-text, by the WAV encoding that carried them: mulaw (callers whose carrier sends µ-law, stt.uploadEncoding auto) or pcm; an utterance the server refused as µ-law and took as PCM counts once for each",
            stt_upload_encodings.clone(),
        );
        registry.register(
            "callfleet_early_replies",
            "Replies prepared during a pause in the caller's turn (turnDetection.earlyReplyMs), by outcome: used (the turn ended there and the reply played), dropped (the caller went on, or typed)",
            early_replies.clone(),
        );
        registry.register(
            "callfleet_reply_frames_dropped",
            "Reply audio frames dropped because the carrier stopped reading (a second queued)",
            reply_frames_dropped.clone(),
        );
        registry.register(
            "callfleet_reply_gaps",
            "Times a reply's audio ran dry before the reply was complete (an audible pause), by \
             cause: audio_late (speech streamed slower than real time or started late), \
             sent_late (queued audio sent late: the worker was short of CPU)",
            reply_gaps.clone(),
        );
        registry.register(
            "callfleet_unspoken_replies",
            "Replies that came back with nothing to say, so the caller heard silence, by cause: \
             empty_completion (the chat model wrote no text), content_filter and \
             max_output_tokens (a realtime response cut off before any audio), incomplete \
             (cut off for another reason)",
            unspoken_replies.clone(),
        );
        let recordings = RecordingMetrics::default();
        recordings.register(&mut registry);
        Self {
            registry,
            active_calls,
            calls_total,
            calls_by_thread,
            errors,
            reload_errors,
            first_audio,
            stt_latency,
            llm_first_token,
            tts_first_byte,
            provider_round_trips,
            turn_overhead,
            barge_ins,
            speech_read_rests,
            realtime_reconnects,
            stt_live_uploads,
            stt_upload_encodings,
            early_replies,
            event_loop_lag,
            overloaded_runtimes,
            reply_frames_dropped,
            reply_gaps,
            unspoken_replies,
            recordings,
            calls_ended: AtomicU64::new(0),
            call_seconds_sum_ms: AtomicU64::new(0),
            calls_with_error: AtomicU64::new(0),
            first_audio_sum_us: AtomicU64::new(0),
            first_audio_count: AtomicU64::new(0),
        }
    }

    pub fn call_started(&self) {
        self.calls_total.inc();
        let thread = crate::media_thread::index().to_string();
        self.calls_by_thread
            .get_or_create(&[("thread", thread)])
            .inc();
    }

    /// Records a finished call's duration and whether it saw an error.
    pub fn call_ended(&self, duration: std::time::Duration, had_error: bool) {
        self.calls_ended.fetch_add(1, Ordering::Relaxed);
        self.call_seconds_sum_ms
            .fetch_add(duration.as_millis() as u64, Ordering::Relaxed);
        if had_error {
            self.calls_with_error.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reply prepared in a pause was `used` or `dropped`.
    pub fn early_reply(&self, outcome: &'static str) {
        self.early_replies
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors.get_or_create(&[("code", code.as_str())]).inc();
    }

    pub fn reply_gaps(&self, gaps: Gaps) {
        for (cause, count) in [
            ("audio_late", gaps.audio_late),
            ("sent_late", gaps.sent_late),
        ] {
            if count > 0 {
                self.reply_gaps
                    .get_or_create(&[("cause", cause)])
                    .inc_by(count);
            }
        }
    }

    /// Gaps counted so far with `cause` (`audio_late` or `sent_late`).
    pub fn reply_gaps_with(&self, cause: &'static str) -> u64 {
        self.reply_gaps.get_or_create(&[("cause", cause)]).get()
    }

    /// A reply with nothing to say; `cause` is one of the label values in the help text.
    pub fn unspoken_reply(&self, cause: &'static str) {
        self.unspoken_replies
            .get_or_create(&[("cause", cause)])
            .inc();
    }

    /// Unspoken replies counted so far with `cause`.
    pub fn unspoken_replies_with(&self, cause: &'static str) -> u64 {
        self.unspoken_replies
            .get_or_create(&[("cause", cause)])
            .get()
    }

    pub fn errors_with(&self, code: ErrorCode) -> u64 {
        self.errors.get_or_create(&[("code", code.as_str())]).get()
    }

    pub fn observe_first_audio(&self, latency: std::time::Duration) {
        self.first_audio.observe(latency.as_secs_f64());
        self.first_audio_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.first_audio_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `active` is sampled at scrape time.
    pub fn prometheus_text(&self, active: usize) -> String {
        self.active_calls.set(active as i64);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn summary(&self, active: usize) -> Summary {
        let total = self.calls_total.get();
        let ended = self.calls_ended.load(Ordering::Relaxed);
        let latency_count = self.first_audio_count.load(Ordering::Relaxed);
        Summary {
            total_calls: total,
            active_calls: active as u64,
            average_call_duration: ratio(
                self.call_seconds_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                ended,
            ),
            error_rate: ratio(self.calls_with_error.load(Ordering::Relaxed) as f64, total),
            average_latency: ratio(
                self.first_audio_sum_us.load(Ordering::Relaxed) as f64 / 1000.0,
                latency_count,
            ),
        }
    }
}

fn ratio(sum: f64, count: u64) -> f64 {
    if count == 0 { 0.0 } else { sum / count as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn text_and_summary() {
        let m = Metrics::new();
        m.call_started();
        m.call_started();
        m.error(ErrorCode::RateLimit);
        m.call_ended(Duration::from_secs(10), true);
        m.observe_first_audio(Duration::from_millis(300));
        let text = m.prometheus_text(1);
        assert!(text.contains("callfleet_active_calls 1"));
        assert!(text.contains("callfleet_calls_total 2"));
        assert!(text.contains(r#"callfleet_errors_total{code="RATE_LIMIT"} 1"#));
        assert!(text.contains("callfleet_turn_first_audio_seconds_bucket"));
        m.recordings.frames_dropped.inc();
        let text = m.prometheus_text(1);
        assert!(text.contains("callfleet_recording_frames_dropped_total 1"));
        assert!(text.contains("callfleet_recording_spool_backlog 0"));
        assert!(text.contains("callfleet_recordings_uploaded_total 0"));
        let s = m.summary(1);
        assert_eq!(s.total_calls, 2);
        assert_eq!(s.average_call_duration, 10.0);
        assert_eq!(s.error_rate, 0.5);
        assert_eq!(s.average_latency, 300.0);
    }
}
