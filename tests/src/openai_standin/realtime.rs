//! `GET /v1/realtime?model=` WebSocket: the GA realtime event flow for one session.
//!
//! Caller audio (`input_audio_buffer.append`, µ-law 8 kHz or pcm 24 kHz per `session.update`)
//! runs through an energy VAD per 20 ms frame (the stand-in's `vad_threshold_dbfs`; the client's
//! 0..1 `threshold` has no energy meaning and is only echoed): `speech_started`, then after
//! `silence_duration_ms` of quiet `speech_stopped`, the committed user item, its transcript
//! (`rules::transcript_of`, when transcription is on) and, with `create_response`, a response
//! whose text is `rules::chat_reply(transcript)` and whose audio is the speech tone. Caller
//! speech during a response cancels it when `interrupt_response` is on. Truncation is checked
//! against the audio actually sent for the item.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{Value, json};

use super::Shared;
use super::audio::{dbfs, mulaw_decode, mulaw_encode};
use super::config::StandinConfig;
use super::faults::{Endpoint, Fault};
use super::respond::{Gate, bad_request, gate};
use super::rules::{chat_reply, speech_samples, tokens, transcript_of};

/// Audio per response audio delta.
const DELTA_MS: u64 = 100;

pub async fn realtime(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mid_stream = match gate(&shared, Endpoint::Realtime).await {
        Gate::Serve(mid_stream) => mid_stream,
        Gate::Refuse(response) => return response,
    };
    let Some(model) = query.get("model").filter(|m| !m.is_empty()).cloned() else {
        return bad_request("missing required parameter: 'model'");
    };
    upgrade
        .read_buffer_size(4096)
        .on_upgrade(move |socket| async move {
            let mut session = Session::new(shared, model, mid_stream);
            session.run(socket).await;
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcmu,
    Pcm24k,
}

impl Format {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "audio/pcmu" | "g711_ulaw" => Some(Format::Pcmu),
            "audio/pcm" | "pcm16" => Some(Format::Pcm24k),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Format::Pcmu => "audio/pcmu",
            Format::Pcm24k => "audio/pcm",
        }
    }
    fn rate(self) -> u32 {
        match self {
            Format::Pcmu => 8000,
            Format::Pcm24k => 24_000,
        }
    }
    fn decode(self, bytes: &[u8]) -> Vec<i16> {
        match self {
            Format::Pcmu => bytes.iter().map(|&b| mulaw_decode(b)).collect(),
            Format::Pcm24k => bytes
                .chunks_exact(2)
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect(),
        }
    }
    fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Format::Pcmu => samples.iter().map(|&s| mulaw_encode(s)).collect(),
            Format::Pcm24k => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ServerVad {
    threshold: f64,
    prefix_padding_ms: u64,
    silence_duration_ms: u64,
    create_response: bool,
    interrupt_response: bool,
}

impl Default for ServerVad {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            create_response: true,
            interrupt_response: true,
        }
    }
}

/// The caller's utterance in progress.
struct Speech {
    item_id: String,
    samples: Vec<i16>,
    quiet_ms: u64,
}

/// A response being streamed: its remaining events, each after a delay.
struct ActiveResponse {
    id: String,
    events: BoxStream<'static, Value>,
}

struct Session {
    shared: Arc<Shared>,
    model: String,
    mid_stream: Option<Fault>,
    next_id: u64,
    instructions: String,
    voice: String,
    input: Format,
    output: Format,
    vad: Option<ServerVad>,
    transcription_model: Option<String>,
    /// Samples not yet forming a whole 20 ms frame.
    partial: Vec<i16>,
    input_ms: u64,
    speech: Option<Speech>,
    last_transcript: String,
    response: Option<ActiveResponse>,
    /// Audio sent per assistant item, for truncation checks.
    item_audio_ms: HashMap<String, u64>,
    audio_deltas_sent: u64,
    stalled: bool,
}

impl Session {
    fn new(shared: Arc<Shared>, model: String, mid_stream: Option<Fault>) -> Self {
        Self {
            shared,
            model,
            mid_stream,
            next_id: 0,
            instructions: String::new(),
            voice: "alloy".into(),
            input: Format::Pcm24k,
            output: Format::Pcm24k,
            vad: Some(ServerVad::default()),
            transcription_model: None,
            partial: Vec::new(),
            input_ms: 0,
            speech: None,
            last_transcript: String::new(),
            response: None,
            item_audio_ms: HashMap::new(),
            audio_deltas_sent: 0,
            stalled: false,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_standin{:06}", self.next_id)
    }

    async fn run(&mut self, mut socket: WebSocket) {
        let created = json!({"type": "session.created", "session": self.session_json()});
        let mut out = vec![created];
        loop {
            for mut event in out.drain(..) {
                if self.stalled {
                    break;
                }
                let is_audio = event["type"] == "response.output_audio.delta";
                if event["type"] == "input_audio_buffer.speech_stopped"
                    && self.mid_stream == Some(Fault::DropAfterSpeech)
                {
                    return; // the client never hears that the caller stopped
                }
                if self.mid_stream == Some(Fault::GarbageEvents) {
                    let garbage = if is_audio {
                        r#"{"type":"response.output_audio.delta","delta":"not base64!"}"#
                    } else {
                        "{not json"
                    };
                    if socket.send(Message::Text(garbage.into())).await.is_err() {
                        return;
                    }
                }
                event["event_id"] = Value::String(self.id("event"));
                if socket
                    .send(Message::Text(event.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                if event["type"] == "input_audio_buffer.speech_stopped"
                    && self.mid_stream == Some(Fault::DropBeforeTranscript)
                {
                    return; // the words go down with the connection
                }
                if event["type"] == "input_audio_buffer.speech_started"
                    && self.mid_stream == Some(Fault::StallInSpeech)
                {
                    self.stalled = true; // it never says the caller stopped
                }
                if is_audio {
                    self.audio_deltas_sent += 1;
                    if self.audio_deltas_sent == 1 {
                        match self.mid_stream {
                            // Drop the TCP connection without a close frame.
                            Some(Fault::DropMidStream) => return,
                            Some(Fault::StallMidStream) => self.stalled = true,
                            _ => {}
                        }
                    }
                }
            }
            let next_response_event = async {
                match self.response.as_mut() {
                    Some(response) if !self.stalled => response.events.next().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if !self.stalled {
                            self.on_client_event(&text, &mut out);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        self.shared.stats.completed(Endpoint::Realtime);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        self.shared.stats.aborted(Endpoint::Realtime);
                        return;
                    }
                },
                event = next_response_event => match event {
                    Some(event) => self.on_response_event(event, &mut out),
                    None => self.response = None,
                },
            }
        }
    }

    fn on_response_event(&mut self, event: Value, out: &mut Vec<Value>) {
        if event["type"] == "response.output_audio.delta" {
            let item = event["item_id"].as_str().unwrap_or_default().to_owned();
            let bytes = event["delta"]
                .as_str()
                .and_then(|d| BASE64.decode(d).ok())
                .map_or(0, |b| b.len());
            let per_ms = match self.output {
                Format::Pcmu => 8,
                Format::Pcm24k => 48,
            };
            *self.item_audio_ms.entry(item).or_default() += (bytes / per_ms) as u64;
        }
        if event["type"] == "response.done" {
            self.response = None;
        }
        out.push(event);
    }

    fn on_client_event(&mut self, text: &str, out: &mut Vec<Value>) {
        let event: Value = match serde_json::from_str(text) {
            Ok(event) => event,
            Err(e) => {
                out.push(error_event("invalid_json", &format!("invalid JSON: {e}")));
                return;
            }
        };
        match event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "session.update" => self.on_session_update(&event, out),
            "input_audio_buffer.append" => {
                let Some(audio) = event
                    .get("audio")
                    .and_then(Value::as_str)
                    .and_then(|a| BASE64.decode(a).ok())
                else {
                    out.push(error_event("invalid_value", "audio must be base64"));
                    return;
                };
                let samples = self.input.decode(&audio);
                let ms = samples.len() as u64 * 1000 / u64::from(self.input.rate());
                self.shared.stats.appended(ms);
                self.on_audio(&samples, out);
            }
            "input_audio_buffer.commit" => match self.speech.take() {
                Some(speech) => self.end_of_speech(speech, out),
                None => out.push(error_event(
                    "input_audio_buffer_commit_empty",
                    "buffer has no speech to commit",
                )),
            },
            "input_audio_buffer.clear" => {
                self.speech = None;
                self.partial.clear();
                out.push(json!({"type": "input_audio_buffer.cleared"}));
            }
            "conversation.item.truncate" => self.on_truncate(&event, out),
            "conversation.item.create" => self.on_item_create(&event, out),
            "response.create" => {
                let text = event
                    .pointer("/response/instructions")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| chat_reply(&self.last_transcript));
                self.start_response(&text, out);
            }
            "response.cancel" => {
                if !self.cancel_response("client_cancelled", out) {
                    out.push(error_event(
                        "response_cancel_not_active",
                        "there is no active response",
                    ));
                }
            }
            other => out.push(error_event(
                "invalid_event",
                &format!("unknown client event type {other:?}"),
            )),
        }
    }

    fn on_session_update(&mut self, event: &Value, out: &mut Vec<Value>) {
        let session = &event["session"];
        let input_format = session
            .pointer("/audio/input/format/type")
            .or_else(|| session.get("input_audio_format"));
        if let Some(name) = input_format.and_then(Value::as_str) {
            match Format::parse(name) {
                Some(format) => self.input = format,
                None => {
                    out.push(error_event(
                        "invalid_value",
                        &format!("unsupported input format {name}"),
                    ));
                    return;
                }
            }
        }
        let output_format = session
            .pointer("/audio/output/format/type")
            .or_else(|| session.get("output_audio_format"));
        if let Some(name) = output_format.and_then(Value::as_str) {
            match Format::parse(name) {
                Some(format) => self.output = format,
                None => {
                    out.push(error_event(
                        "invalid_value",
                        &format!("unsupported output format {name}"),
                    ));
                    return;
                }
            }
        }
        let turn_detection = session
            .pointer("/audio/input/turn_detection")
            .or_else(|| session.get("turn_detection"));
        match turn_detection {
            Some(Value::Null) => self.vad = None,
            Some(td) => {
                let base = ServerVad::default();
                let num = |k: &str, d: u64| td.get(k).and_then(Value::as_u64).unwrap_or(d);
                let flag = |k: &str, d: bool| td.get(k).and_then(Value::as_bool).unwrap_or(d);
                self.vad = Some(ServerVad {
                    threshold: td
                        .get("threshold")
                        .and_then(Value::as_f64)
                        .unwrap_or(base.threshold),
                    prefix_padding_ms: num("prefix_padding_ms", base.prefix_padding_ms),
                    silence_duration_ms: num("silence_duration_ms", base.silence_duration_ms),
                    create_response: flag("create_response", base.create_response),
                    interrupt_response: flag("interrupt_response", base.interrupt_response),
                });
            }
            None => {}
        }
        let transcription = session
            .pointer("/audio/input/transcription")
            .or_else(|| session.get("input_audio_transcription"));
        match transcription {
            Some(Value::Null) => self.transcription_model = None,
            Some(t) => {
                self.transcription_model = t.get("model").and_then(Value::as_str).map(str::to_owned)
            }
            None => {}
        }
        if let Some(instructions) = session.get("instructions").and_then(Value::as_str) {
            self.instructions = instructions.to_owned();
        }
        if let Some(voice) = session
            .pointer("/audio/output/voice")
            .or_else(|| session.get("voice"))
            .and_then(Value::as_str)
        {
            self.voice = voice.to_owned();
        }
        out.push(json!({"type": "session.updated", "session": self.session_json()}));
    }

    fn session_json(&self) -> Value {
        let turn_detection = match &self.vad {
            Some(v) => json!({
                "type": "server_vad", "threshold": v.threshold, "prefix_padding_ms": v.prefix_padding_ms,
                "silence_duration_ms": v.silence_duration_ms, "create_response": v.create_response,
                "interrupt_response": v.interrupt_response,
            }),
            None => Value::Null,
        };
        let transcription = match &self.transcription_model {
            Some(model) => json!({"model": model}),
            None => Value::Null,
        };
        json!({
            "type": "realtime", "object": "realtime.session", "id": "sess_standin", "model": self.model,
            "instructions": self.instructions, "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": self.input.name()}, "turn_detection": turn_detection, "transcription": transcription},
                "output": {"format": {"type": self.output.name()}, "voice": self.voice},
            },
        })
    }

    /// Energy VAD over whole 20 ms frames.
    fn on_audio(&mut self, samples: &[i16], out: &mut Vec<Value>) {
        self.partial.extend_from_slice(samples);
        let frame = (self.input.rate() / 50) as usize;
        let whole = self.partial.len() / frame * frame;
        let frames: Vec<i16> = self.partial.drain(..whole).collect();
        for frame in frames.chunks(frame) {
            self.on_frame(frame, out);
            self.input_ms += 20;
        }
    }

    fn on_frame(&mut self, frame: &[i16], out: &mut Vec<Value>) {
        let Some(vad) = self.vad else {
            return;
        };
        let loud = dbfs(frame) >= self.shared.config.vad_threshold_dbfs;
        if loud && self.speech.is_none() {
            let item_id = self.id("item");
            out.push(json!({
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self.input_ms.saturating_sub(vad.prefix_padding_ms),
                "item_id": item_id,
            }));
            if vad.interrupt_response {
                self.cancel_response("turn_detected", out);
            }
            self.speech = Some(Speech {
                item_id,
                samples: Vec::new(),
                quiet_ms: 0,
            });
        }
        let Some(speech) = self.speech.as_mut() else {
            return;
        };
        speech.samples.extend_from_slice(frame);
        speech.quiet_ms = if loud { 0 } else { speech.quiet_ms + 20 };
        if speech.quiet_ms >= vad.silence_duration_ms
            && let Some(speech) = self.speech.take()
        {
            out.push(json!({
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": self.input_ms + 20,
                "item_id": speech.item_id,
            }));
            self.end_of_speech(speech, out);
        }
    }

    /// The caller's turn is committed: user item, transcript, and maybe a response.
    fn end_of_speech(&mut self, speech: Speech, out: &mut Vec<Value>) {
        let item_id = speech.item_id;
        out.push(json!({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": null}));
        out.push(json!({
            "type": "conversation.item.created", "previous_item_id": null,
            "item": {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                     "content": [{"type": "input_audio", "transcript": null}]},
        }));
        let transcript = transcript_of(
            &speech.samples,
            self.input.rate(),
            self.shared.config.vad_threshold_dbfs,
        );
        if self.transcription_model.is_some() {
            out.push(json!({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id, "content_index": 0, "transcript": transcript,
            }));
        }
        self.last_transcript = transcript;
        if self.vad.is_some_and(|v| v.create_response) {
            let reply = chat_reply(&self.last_transcript);
            self.start_response(&reply, out);
        }
    }

    fn start_response(&mut self, text: &str, out: &mut Vec<Value>) {
        self.cancel_response("turn_detected", out);
        if self.mid_stream == Some(Fault::StallAfterHeaders) {
            return; // a session that takes audio but never answers
        }
        let response_id = self.id("resp");
        if self.mid_stream == Some(Fault::FailResponse) {
            out.push(json!({"type": "response.created", "response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}}));
            out.push(json!({"type": "response.done", "response": {
                "id": response_id, "object": "realtime.response", "status": "failed", "output": [],
                "status_details": {"type": "failed", "error": {"type": "server_error", "code": "injected"}},
            }}));
            return;
        }
        if self.mid_stream == Some(Fault::ContentFilter) {
            out.push(json!({"type": "response.created", "response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}}));
            out.push(json!({"type": "response.done", "response": {
                "id": response_id, "object": "realtime.response", "status": "incomplete", "output": [],
                "status_details": {"type": "incomplete", "reason": "content_filter"},
            }}));
            return;
        }
        let item_id = self.id("item");
        let config = &self.shared.config;
        let rate = self.output.rate();
        let samples = speech_samples(
            text,
            1.0,
            config.speech_ms_per_char,
            config.speech_tone_hz,
            rate,
        );
        let per_delta = (u64::from(rate) * DELTA_MS / 1000) as usize;
        let pace = if config.speech_pace > 0.0 {
            config.speech_pace
        } else {
            1.0
        };
        let between = Duration::from_millis(DELTA_MS).div_f64(pace);
        let mut words: VecDeque<String> = tokens(text).into();
        let ids = json!({"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0});
        let with_ids = |mut v: Value| {
            if let (Some(target), Some(source)) = (v.as_object_mut(), ids.as_object()) {
                target.extend(source.clone());
            }
            v
        };
        out.push(json!({"type": "response.created", "response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}}));
        let mut events: Vec<(Duration, Value)> = vec![(
            StandinConfig::ms(config.realtime_response_ms),
            json!({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                   "item": {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        )];
        for (index, chunk) in samples.chunks(per_delta.max(1)).enumerate() {
            let delay = if index == 0 { Duration::ZERO } else { between };
            let audio = BASE64.encode(self.output.encode(chunk));
            events.push((
                delay,
                with_ids(json!({"type": "response.output_audio.delta", "delta": audio})),
            ));
            if let Some(word) = words.pop_front() {
                events.push((
                    Duration::ZERO,
                    with_ids(
                        json!({"type": "response.output_audio_transcript.delta", "delta": word}),
                    ),
                ));
            }
        }
        for word in words {
            events.push((
                Duration::ZERO,
                with_ids(json!({"type": "response.output_audio_transcript.delta", "delta": word})),
            ));
        }
        events.push((
            Duration::ZERO,
            with_ids(json!({"type": "response.output_audio.done"})),
        ));
        events.push((
            Duration::ZERO,
            with_ids(json!({"type": "response.output_audio_transcript.done", "transcript": text})),
        ));
        events.push((Duration::ZERO, json!({"type": "response.done", "response": {
            "id": response_id, "object": "realtime.response", "status": "completed",
            "output": [{"id": item_id, "type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": text}]}],
        }})));
        let events = stream::iter(events)
            .then(|(delay, event)| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                event
            })
            .boxed();
        self.response = Some(ActiveResponse {
            id: response_id,
            events,
        });
    }

    /// Stops the response in flight, if any; reports whether there was one.
    fn cancel_response(&mut self, reason: &str, out: &mut Vec<Value>) -> bool {
        let Some(response) = self.response.take() else {
            return false;
        };
        self.shared.stats.cancelled_response();
        out.push(json!({"type": "response.done", "response": {
            "id": response.id, "object": "realtime.response", "status": "cancelled",
            "status_details": {"type": "cancelled", "reason": reason},
        }}));
        true
    }

    /// A message added by the client, e.g. a resumed call's history: checked like the API checks
    /// it (`input_text` for user and system, `output_text` for assistant), then acknowledged. A
    /// user message becomes what the next response answers.
    fn on_item_create(&mut self, event: &Value, out: &mut Vec<Value>) {
        let item = &event["item"];
        if item.get("type").and_then(Value::as_str) != Some("message") {
            out.push(error_event(
                "invalid_value",
                "the stand-in only accepts items of type \"message\"",
            ));
            return;
        }
        let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
        let wanted = match role {
            "user" | "system" => "input_text",
            "assistant" => "output_text",
            other => {
                out.push(error_event(
                    "invalid_value",
                    &format!("invalid role {other:?}"),
                ));
                return;
            }
        };
        let Some(content) = item.get("content").and_then(Value::as_array) else {
            out.push(error_event(
                "missing_required_parameter",
                "item.content is required",
            ));
            return;
        };
        let mut text = String::new();
        for part in content {
            let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
            let Some(part_text) = part.get("text").and_then(Value::as_str) else {
                out.push(error_event(
                    "missing_required_parameter",
                    "content text is required",
                ));
                return;
            };
            if kind != wanted {
                out.push(error_event(
                    "invalid_value",
                    &format!("{role} message content must be {wanted}, not {kind:?}"),
                ));
                return;
            }
            text.push_str(part_text);
        }
        if role == "user" {
            self.last_transcript = text;
        }
        self.shared.stats.item_created();
        let id = self.id("item");
        let mut item = item.clone();
        item["id"] = json!(id);
        item["object"] = json!("realtime.item");
        item["status"] = json!("completed");
        out.push(
            json!({"type": "conversation.item.added", "previous_item_id": null, "item": item}),
        );
        out.push(json!({"type": "conversation.item.done", "previous_item_id": null, "item": item}));
    }

    fn on_truncate(&mut self, event: &Value, out: &mut Vec<Value>) {
        let item_id = event
            .get("item_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let audio_end_ms = event.get("audio_end_ms").and_then(Value::as_u64);
        let content_index = event
            .get("content_index")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let Some(sent_ms) = self.item_audio_ms.get(item_id).copied() else {
            out.push(error_event(
                "item_not_found",
                &format!("no assistant item {item_id:?} with audio"),
            ));
            return;
        };
        let Some(audio_end_ms) = audio_end_ms else {
            out.push(error_event(
                "missing_required_parameter",
                "audio_end_ms is required",
            ));
            return;
        };
        if audio_end_ms > sent_ms {
            out.push(error_event(
                "invalid_value",
                &format!("audio_end_ms {audio_end_ms} is beyond the {sent_ms} ms of audio of item {item_id}"),
            ));
            return;
        }
        self.shared.stats.truncation();
        out.push(json!({"type": "conversation.item.truncated", "item_id": item_id, "content_index": content_index, "audio_end_ms": audio_end_ms}));
    }
}

fn error_event(code: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message, "param": null, "event_id": null}})
}
