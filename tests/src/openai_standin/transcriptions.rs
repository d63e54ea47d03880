//! `POST /v1/audio/transcriptions`: multipart WAV in, `{"text"}` or streamed
//! `transcript.text.delta`/`done` events out (see `rules` for what is "heard").

use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::Shared;
use super::arrival::RequestArrival;
use super::audio::{is_mulaw_wav, read_wav};
use super::config::StandinConfig;
use super::faults::Endpoint;
use super::respond::{Gate, Piece, bad_request, gate, openai_error, paced_response, sse};
use super::rules::{tokens, transcript_of};

struct Upload {
    wav: Vec<u8>,
    model: String,
    stream: bool,
}

async fn read_upload(mut multipart: Multipart) -> Result<Upload, String> {
    let mut upload = Upload {
        wav: Vec::new(),
        model: String::new(),
        stream: false,
    };
    while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => upload.wav = field.bytes().await.map_err(|e| e.to_string())?.to_vec(),
            "model" => upload.model = field.text().await.map_err(|e| e.to_string())?,
            "stream" => upload.stream = field.text().await.map_err(|e| e.to_string())? == "true",
            _ => {} // language, prompt, response_format: accepted, not needed
        }
    }
    if upload.wav.is_empty() {
        return Err("missing file".into());
    }
    if upload.model.is_empty() {
        return Err("missing model".into());
    }
    Ok(upload)
}

pub async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    arrival: RequestArrival,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    let mid_stream = match gate(&shared, Endpoint::Transcriptions).await {
        Gate::Serve(mid_stream) => mid_stream,
        Gate::Refuse(response) => return response,
    };
    let chunked = !headers.contains_key(CONTENT_LENGTH);
    if chunked {
        shared.stats.chunked_upload();
        if shared.config.require_content_length {
            return openai_error(
                StatusCode::LENGTH_REQUIRED,
                "invalid_request_error",
                None,
                "A Content-Length is required (this server cannot take chunked uploads).",
            );
        }
    }
    let upload = match read_upload(multipart).await {
        Ok(upload) => upload,
        Err(e) => {
            if chunked {
                shared.stats.broken_upload();
            }
            return bad_request(&format!("invalid transcription request: {e}"));
        }
    };
    if is_mulaw_wav(&upload.wav) {
        shared.stats.mulaw_upload();
        if shared.config.pcm_wav_only {
            return bad_request(
                "Unsupported audio encoding: only 16-bit PCM WAV files are accepted.",
            );
        }
    }
    // A provider starts on the audio once all of it is there: latencies count from the arrival
    // of its last bytes, so time spent uploading is the client's, as it is against the real API.
    let arrived = arrival.or_now();
    let (samples, sample_rate) = match read_wav(&upload.wav) {
        Ok(audio) => audio,
        Err(e) => return bad_request(&format!("could not decode audio file: {e}")),
    };
    shared.stats.transcribed(samples.len());
    let config = &shared.config;
    let text = transcript_of(&samples, sample_rate, config.vad_threshold_dbfs);
    let first = StandinConfig::ms(config.transcription_ms);
    if upload.stream {
        let mut pieces = Vec::new();
        for (index, token) in tokens(&text).into_iter().enumerate() {
            let delay = if index == 0 {
                first
            } else {
                StandinConfig::ms(config.transcription_delta_ms)
            };
            let event = json!({"type": "transcript.text.delta", "delta": token});
            pieces.push(Piece::new(delay, sse(&event.to_string())));
        }
        let delay = if pieces.is_empty() {
            first
        } else {
            Default::default()
        };
        let done = json!({"type": "transcript.text.done", "text": text});
        pieces.push(Piece::new(delay, sse(&done.to_string())));
        paced_response(
            &shared,
            Endpoint::Transcriptions,
            "text/event-stream",
            arrived,
            pieces,
            mid_stream,
        )
    } else {
        let body = json!({"text": text, "usage": {"type": "duration", "seconds": samples.len() as u64 / u64::from(sample_rate.max(1))}});
        let pieces = vec![Piece::new(first, body.to_string())];
        paced_response(
            &shared,
            Endpoint::Transcriptions,
            "application/json",
            arrived,
            pieces,
            mid_stream,
        )
    }
}
