//! One cascade turn (utterance → STT → streamed LLM → sentence-by-sentence TTS), run as its own
//! task so the call task stays free for media. Aborting the task drops every provider stream,
//! which closes the HTTP requests in flight: that is how barge-in cancels LLM and TTS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::config::PipelineVersion;
use crate::media::{StreamResampler, l16};
use crate::metrics::Metrics;
use crate::providers::{ChatMessage, ProviderError, TTS_SAMPLE_RATE, Utterance};

use super::handoff::{HandOff, HandOffPacer};
use super::sentences::SentenceSplitter;

/// Highest sample rate the cascade sends to speech-to-text. Telephone (8 kHz) and wideband
/// (16 kHz) utterances go as they are: the transcription API takes any WAV rate and resamples
/// for its model itself, and upsampling adds no information, only CPU and upload bytes. Higher
/// rates are brought down to this one.
pub const STT_SAMPLE_RATE: u32 = 16_000;

/// What the turn asks for.
pub enum TurnInput {
    /// Caller speech to transcribe and answer. `prompt` is the system prompt plus history.
    Speech {
        utterance: Utterance,
        prompt: Vec<ChatMessage>,
    },
    /// Caller input that is already text (a keypad entry) to answer.
    Typed {
        text: String,
        prompt: Vec<ChatMessage>,
    },
    /// Fixed text to speak (the greeting).
    Say(String),
}

/// Progress reported to the call task, in order.
#[derive(Debug)]
pub enum TurnOutput {
    /// What the caller said (may be empty: then no reply follows).
    Heard(String),
    /// A new sentence of the reply begins.
    Sentence(String),
    /// How long the turn waited on providers before its first audio (speech-to-text, the
    /// chat model's first sentence, speech's first byte); sent just before that audio.
    ProviderWait(Duration),
    /// Reply audio at the call's outbound rate.
    Audio(Vec<i16>),
    /// The current sentence's audio is complete.
    SentenceDone,
    /// The reply is complete.
    Done,
    /// A provider failed; the call gets an error frame and goes on.
    Failed(ProviderError),
}

/// Runs one turn, sending progress to `out`. Returns when the reply is complete, failed, or the
/// call task went away.
pub async fn run_turn(
    pipeline: Arc<PipelineVersion>,
    metrics: Arc<Metrics>,
    input: TurnInput,
    out_rate: u32,
    out: mpsc::Sender<TurnOutput>,
) {
    let result = match input {
        TurnInput::Say(text) => speak(&pipeline, &metrics, vec![text], out_rate, &out).await,
        TurnInput::Speech { utterance, prompt } => {
            answer(&pipeline, &metrics, utterance, prompt, out_rate, &out).await
        }
        TurnInput::Typed { text, prompt } => {
            let heard = Heard {
                text,
                provider_wait: Duration::ZERO,
            };
            reply(&pipeline, &metrics, heard, prompt, out_rate, &out).await
        }
    };
    let last = match result {
        Ok(()) => TurnOutput::Done,
        Err(TurnError::Provider(err)) => TurnOutput::Failed(err),
        Err(TurnError::CallGone) => return,
    };
    let _ = out.send(last).await;
}

enum TurnError {
    Provider(ProviderError),
    CallGone,
}

impl From<ProviderError> for TurnError {
    fn from(err: ProviderError) -> Self {
        TurnError::Provider(err)
    }
}

async fn send(out: &mpsc::Sender<TurnOutput>, item: TurnOutput) -> Result<(), TurnError> {
    out.send(item).await.map_err(|_| TurnError::CallGone)
}

/// Transcribes the utterance, then answers what was heard.
async fn answer(
    pipeline: &PipelineVersion,
    metrics: &Metrics,
    utterance: Utterance,
    prompt: Vec<ChatMessage>,
    out_rate: u32,
    out: &mpsc::Sender<TurnOutput>,
) -> Result<(), TurnError> {
    let spec = &pipeline.config.spec;
    let utterance = to_stt_rate(utterance);
    let started = Instant::now();
    let transcript = pipeline
        .providers
        .stt
        .transcribe(utterance, &spec.stt)
        .await?;
    let stt_wait = started.elapsed();
    metrics.stt_latency.observe(stt_wait.as_secs_f64());
    let heard = Heard {
        text: transcript.text.trim().to_owned(),
        provider_wait: stt_wait,
    };
    reply(pipeline, metrics, heard, prompt, out_rate, out).await
}

/// What the caller said, and the provider time it took to know it.
struct Heard {
    text: String,
    provider_wait: Duration,
}

/// Streams the model's answer to `heard` through TTS, sentence by sentence.
async fn reply(
    pipeline: &PipelineVersion,
    metrics: &Metrics,
    heard: Heard,
    mut prompt: Vec<ChatMessage>,
    out_rate: u32,
    out: &mpsc::Sender<TurnOutput>,
) -> Result<(), TurnError> {
    let spec = &pipeline.config.spec;
    let Heard {
        text,
        provider_wait: heard_wait,
    } = heard;
    send(out, TurnOutput::Heard(text.clone())).await?;
    if text.is_empty() {
        return Ok(());
    }
    prompt.push(ChatMessage::new(crate::providers::ChatRole::User, text));

    // The LLM writes into a sentence channel while TTS reads from it, so the first sentence is
    // spoken while the model is still writing the rest.
    let (sentence_tx, mut sentence_rx) = mpsc::channel::<String>(16);
    // The chat model's share of the wait for the first audio: request to first sentence (as
    // received here; the splitter and the channel hop add microseconds).
    let chat_started = Instant::now();
    let llm = async move {
        let mut tokens = pipeline.providers.chat.stream_chat(prompt, &spec.llm);
        let mut splitter = SentenceSplitter::default();
        let mut first = true;
        while let Some(delta) = tokens.next().await {
            let delta = delta?;
            if first {
                metrics
                    .llm_first_token
                    .observe(chat_started.elapsed().as_secs_f64());
                first = false;
            }
            for sentence in splitter.push(&delta) {
                if sentence_tx.send(sentence).await.is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(rest) = splitter.finish() {
            let _ = sentence_tx.send(rest).await;
        }
        Ok::<(), TurnError>(())
    };
    let tts = async {
        let mut speaker = Speaker::new(pipeline, metrics, out_rate)?;
        let mut first = true;
        while let Some(sentence) = sentence_rx.recv().await {
            if first {
                speaker.provider_wait = heard_wait + chat_started.elapsed();
                first = false;
            }
            speaker.say(sentence, out).await?;
        }
        Ok::<(), TurnError>(())
    };
    tokio::try_join!(llm, tts)?;
    Ok(())
}

async fn speak(
    pipeline: &PipelineVersion,
    metrics: &Metrics,
    sentences: Vec<String>,
    out_rate: u32,
    out: &mpsc::Sender<TurnOutput>,
) -> Result<(), TurnError> {
    let mut speaker = Speaker::new(pipeline, metrics, out_rate)?;
    for sentence in sentences {
        speaker.say(sentence, out).await?;
    }
    Ok(())
}

/// Streams sentences through TTS and resamples the 24 kHz PCM to the call's rate.
struct Speaker<'a> {
    pipeline: &'a PipelineVersion,
    metrics: &'a Metrics,
    resampler: StreamResampler,
    pcm: Vec<i16>,
    /// Audio at the call's rate not yet handed to the call task.
    resampled: Vec<i16>,
    pacer: HandOffPacer,
    /// Provider time on the way to this reply's first audio before speech was asked for.
    provider_wait: Duration,
    /// [`TurnOutput::ProviderWait`] went out.
    wait_reported: bool,
}

impl<'a> Speaker<'a> {
    fn new(
        pipeline: &'a PipelineVersion,
        metrics: &'a Metrics,
        out_rate: u32,
    ) -> Result<Self, TurnError> {
        let resampler = StreamResampler::new(TTS_SAMPLE_RATE, out_rate)
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        Ok(Self {
            pipeline,
            metrics,
            resampler,
            pcm: Vec::new(),
            resampled: Vec::new(),
            pacer: HandOffPacer::new(out_rate),
            provider_wait: Duration::ZERO,
            wait_reported: false,
        })
    }

    /// Hands the audio collected so far to the call task.
    async fn hand_off(&mut self, out: &mpsc::Sender<TurnOutput>) -> Result<(), TurnError> {
        if self.resampled.is_empty() {
            return Ok(());
        }
        self.pacer.handed(self.resampled.len(), Instant::now());
        // The next batch gets a buffer of a batch's size, not one regrown from empty.
        let next = Vec::with_capacity(self.resampled.capacity());
        let batch = std::mem::replace(&mut self.resampled, next);
        send(out, TurnOutput::Audio(batch)).await
    }

    async fn say(
        &mut self,
        sentence: String,
        out: &mpsc::Sender<TurnOutput>,
    ) -> Result<(), TurnError> {
        send(out, TurnOutput::Sentence(sentence.clone())).await?;
        let started = Instant::now();
        let mut audio = self
            .pipeline
            .providers
            .tts
            .stream_speech(sentence, &self.pipeline.config.spec.tts);
        let mut first = true;
        let hold = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(hold);
        let mut holding = false;
        loop {
            let chunk = tokio::select! {
                biased;
                chunk = audio.next() => chunk,
                () = &mut hold, if holding => {
                    holding = false;
                    self.hand_off(out).await?;
                    continue;
                }
            };
            let Some(chunk) = chunk else {
                break;
            };
            let chunk = chunk?;
            if first {
                let tts_wait = started.elapsed();
                self.metrics.tts_first_byte.observe(tts_wait.as_secs_f64());
                if !self.wait_reported {
                    self.wait_reported = true;
                    let wait = self.provider_wait + tts_wait;
                    send(out, TurnOutput::ProviderWait(wait)).await?;
                }
                first = false;
            }
            self.pcm.clear();
            l16::decode_into(&chunk, &mut self.pcm)
                .map_err(|e| ProviderError::Protocol(e.to_string()))?;
            self.resampler
                .push(&self.pcm, &mut self.resampled)
                .map_err(|e| ProviderError::Protocol(e.to_string()))?;
            match self.pacer.decide(self.resampled.len(), Instant::now()) {
                HandOff::Now => {
                    holding = false;
                    self.hand_off(out).await?;
                }
                HandOff::HoldUntil(at) if !holding => {
                    hold.as_mut().reset(at.into());
                    holding = true;
                }
                HandOff::HoldUntil(_) => {}
            }
        }
        self.resampler
            .flush(&mut self.resampled)
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        self.hand_off(out).await?;
        send(out, TurnOutput::SentenceDone).await
    }
}

/// Brings an utterance above [`STT_SAMPLE_RATE`] down to it; lower rates pass unchanged.
fn to_stt_rate(utterance: Utterance) -> Utterance {
    if utterance.sample_rate <= STT_SAMPLE_RATE {
        return utterance;
    }
    let Ok(mut resampler) = StreamResampler::new(utterance.sample_rate, STT_SAMPLE_RATE) else {
        return utterance;
    };
    let mut samples = Vec::with_capacity(
        utterance.samples.len() * STT_SAMPLE_RATE as usize / utterance.sample_rate.max(1) as usize,
    );
    if resampler.push(&utterance.samples, &mut samples).is_err()
        || resampler.flush(&mut samples).is_err()
    {
        return utterance;
    }
    Utterance {
        samples,
        sample_rate: STT_SAMPLE_RATE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stt_gets_telephone_audio_as_is_and_high_rates_brought_down() {
        let phone = Utterance {
            samples: vec![100; 8_000],
            sample_rate: 8_000,
        };
        let sent = to_stt_rate(phone);
        assert_eq!((sent.samples.len(), sent.sample_rate), (8_000, 8_000));

        let tts_rate = Utterance {
            samples: vec![100; 24_000],
            sample_rate: 24_000,
        };
        let sent = to_stt_rate(tts_rate);
        assert_eq!(sent.sample_rate, STT_SAMPLE_RATE);
        let expected = 16_000_i64;
        assert!(
            (sent.samples.len() as i64 - expected).abs() < 400,
            "one second at 24 kHz is about one second at 16 kHz: {}",
            sent.samples.len()
        );
    }
}
