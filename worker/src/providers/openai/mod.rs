//! The OpenAI-compatible implementation of every provider trait, against a configurable base
//! URL (the OpenAI API, any compatible server, or the local stand-in in tests).

pub mod chat;
pub mod http;
pub mod live;
pub mod pcm;
pub mod realtime;
pub mod retry;
pub mod sse;
pub mod stt;
pub mod trust;
pub mod tts;
pub mod wav;

use std::future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

pub use self::http::ProviderHttp;
use self::http::{OpenResponse, Step, decode_stream};
use self::pcm::SampleAligner;
use crate::providers::{
    ChatMessage, ChatModel, LiveUpload, ProviderConfig, ProviderError, ProviderResult, Providers,
    Realtime, RealtimeOptions, RealtimeSession, SpeechToText, TextToSpeech, TranscriptEvent,
    Utterance,
};
use callfleet_crds::aipipeline::{LlmSpec, RealtimeSpec, SttSpec, TtsSpec, UploadEncoding};

/// An OpenAI-compatible provider: one pipeline version's endpoint and key over the worker's
/// shared connection pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OpenAi {
    http: ProviderHttp,
    config: Arc<ProviderConfig>,
    /// Set once the server refused an upload made while the caller spoke and then took the
    /// same utterance whole: it needs a length up front, so later utterances go whole.
    live_refused: Arc<AtomicBool>,
    /// Set once the server refused an utterance as µ-law WAV and then took it as PCM: later
    /// utterances go as PCM.
    mulaw_refused: Arc<AtomicBool>,
}

impl OpenAi {
    pub fn new(http: ProviderHttp, config: ProviderConfig) -> Self {
        Self {
            http,
            config: Arc::new(config),
            live_refused: Arc::new(AtomicBool::new(false)),
            mulaw_refused: Arc::new(AtomicBool::new(false)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    /// The whole utterance in one request, with retries; `first` is the error of an attempt
    /// already made (an upload while the caller spoke).
    ///
    /// µ-law callers' utterances go as µ-law WAV unless the pipeline or the server wants PCM;
    /// a server that refuses that (a 4xx other than auth and rate limits) gets the utterance
    /// again as PCM at once, and once PCM worked, PCM from then on.
    async fn transcribe_whole(
        &self,
        audio: Utterance,
        spec: &SttSpec,
        first: Option<ProviderError>,
    ) -> ProviderResult<BoxStream<'static, ProviderResult<TranscriptEvent>>> {
        let mulaw = audio.mulaw
            && spec.upload_encoding == UploadEncoding::Auto
            && !self.mulaw_refused.load(Ordering::Relaxed);
        if !mulaw {
            return self
                .upload_whole(&audio, WavEncoding::Pcm, spec, first)
                .await;
        }
        let refusal = match self
            .upload_whole(&audio, WavEncoding::Mulaw, spec, first)
            .await
        {
            Err(refusal @ ProviderError::Rejected { .. }) => refusal,
            answered => return answered,
        };
        let pcm = self
            .upload_whole(&audio, WavEncoding::Pcm, spec, None)
            .await;
        if pcm.is_ok() && !self.mulaw_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                base_url = %self.config.base_url,
                error = %refusal,
                "the provider refused an utterance as µ-law WAV and took it as 16-bit PCM: this pipeline version uploads PCM from now on"
            );
        }
        pcm
    }

    /// One utterance as a WAV of `encoding`, with retries.
    async fn upload_whole(
        &self,
        audio: &Utterance,
        encoding: WavEncoding,
        spec: &SttSpec,
        first: Option<ProviderError>,
    ) -> ProviderResult<BoxStream<'static, ProviderResult<TranscriptEvent>>> {
        let wav = Bytes::from(match encoding {
            WavEncoding::Mulaw => wav::encode_mulaw_wav(&audio.samples, audio.sample_rate),
            WavEncoding::Pcm => wav::encode_wav(&audio.samples, audio.sample_rate),
        });
        self.http.count_upload_encoding(encoding.label());
        let streamed = stt::supports_streaming(&spec.model);
        let url = self.url("/audio/transcriptions");
        let response = self
            .http
            .send_after(&self.config, "transcriptions", first, |client| {
                client
                    .post(&url)
                    .multipart(stt::transcription_form(&wav, spec, streamed))
            })
            .await?;
        transcript_events(response).await
    }
}

/// How an utterance sent whole is encoded.
#[derive(Clone, Copy, Debug)]
enum WavEncoding {
    Mulaw,
    Pcm,
}

impl WavEncoding {
    fn label(self) -> &'static str {
        match self {
            Self::Mulaw => "mulaw",
            Self::Pcm => "pcm",
        }
    }
}

/// The transcript in a successful response. Decided by what came back, not what was asked: a
/// compatible server may ignore `stream=true` and answer plain JSON.
async fn transcript_events(
    response: OpenResponse,
) -> ProviderResult<BoxStream<'static, ProviderResult<TranscriptEvent>>> {
    if response.is_event_stream() {
        Ok(decode_stream(
            response.into_sse(),
            "transcription stream",
            |event| stt::decode_transcript_event(&event.data),
        ))
    } else {
        let body = response.bytes().await?;
        let transcript = stt::decode_transcript_json(&body)?;
        Ok(stream::once(future::ready(Ok(TranscriptEvent::Done(transcript)))).boxed())
    }
}

impl Providers {
    /// Every provider of a pipeline served by one OpenAI-compatible endpoint.
    pub fn openai(http: ProviderHttp, config: ProviderConfig) -> Self {
        let openai = Arc::new(OpenAi::new(http, config));
        Self {
            stt: openai.clone(),
            chat: openai.clone(),
            tts: openai.clone(),
            realtime: openai,
        }
    }
}

impl SpeechToText for OpenAi {
    fn transcribe_stream(
        &self,
        audio: Utterance,
        spec: &SttSpec,
    ) -> BoxStream<'static, ProviderResult<TranscriptEvent>> {
        let this = self.clone();
        let spec = spec.clone();
        let request = async move { this.transcribe_whole(audio, &spec, None).await };
        stream::once(request).try_flatten().boxed()
    }

    fn begin_upload(&self, sample_rate: u32, spec: &SttSpec) -> Option<Box<dyn LiveUpload>> {
        if !spec.upload_while_speaking || self.live_refused.load(Ordering::Relaxed) {
            return None;
        }
        Some(Box::new(live::LiveTranscription::begin(
            self.clone(),
            sample_rate,
            spec,
        )))
    }
}

impl ChatModel for OpenAi {
    fn stream_chat(
        &self,
        messages: Vec<ChatMessage>,
        spec: &LlmSpec,
    ) -> BoxStream<'static, ProviderResult<String>> {
        let this = self.clone();
        let body = chat::chat_request_body(&messages, spec);
        let request = async move {
            let url = this.url("/chat/completions");
            let response = this
                .http
                .send(&this.config, "chat", |client| client.post(&url).json(&body))
                .await?;
            Ok(decode_stream(response.into_sse(), "chat stream", |event| {
                chat::decode_chat_event(&event.data)
            }))
        };
        stream::once(request).try_flatten().boxed()
    }
}

impl TextToSpeech for OpenAi {
    fn stream_speech(
        &self,
        text: String,
        spec: &TtsSpec,
    ) -> BoxStream<'static, ProviderResult<Bytes>> {
        let this = self.clone();
        let body = tts::speech_request_body(&text, spec);
        let request = async move {
            let url = this.url("/audio/speech");
            let response = this
                .http
                .send(&this.config, "speech", |client| {
                    client.post(&url).json(&body)
                })
                .await?;
            let mut aligner = SampleAligner::default();
            // A raw body has no terminator: it is complete when it ends without error (marked
            // by the trailing `None`). A dangling half sample at the end is dropped.
            let chunks = response
                .into_chunks()
                .map_ok(Some)
                .chain(stream::once(future::ready(Ok(None))));
            Ok(decode_stream(chunks, "speech stream", move |chunk| {
                let Some(chunk) = chunk else {
                    return Step::Finish;
                };
                match aligner.push(chunk) {
                    whole if whole.is_empty() => Step::Skip,
                    whole => Step::Yield(whole),
                }
            }))
        };
        stream::once(request).try_flatten().boxed()
    }
}

impl Realtime for OpenAi {
    fn connect(
        &self,
        spec: &RealtimeSpec,
        options: RealtimeOptions,
    ) -> BoxFuture<'static, ProviderResult<RealtimeSession>> {
        let this = self.clone();
        let spec = spec.clone();
        Box::pin(async move {
            let tls = this.http.realtime_tls();
            realtime::connect(&this.config, tls, &spec, &options).await
        })
    }
}
