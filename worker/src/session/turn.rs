//! One cascade turn (utterance → STT → streamed LLM → sentence-by-sentence TTS), run as its own
//! task so the call task stays free for media. Aborting the task drops every provider stream,
//! which closes the HTTP requests in flight: that is how barge-in cancels LLM and TTS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::admission::CallLag;
use crate::config::PipelineVersion;
use crate::media::{StreamResampler, l16};
use crate::metrics::Metrics;
use crate::providers::{
    ChatMessage, LiveUpload, ProviderError, ProviderResult, TTS_SAMPLE_RATE, Utterance,
    final_transcript,
};

use super::handoff::{HandOff, HandOffPacer};
use super::sentence_speech::{SentenceSpeech, awaiting_first_byte, read_ahead};
use super::sentences::SentenceSplitter;

/// Highest sample rate the cascade sends to speech-to-text. Telephone (8 kHz) and wideband
/// (16 kHz) utterances go as they are: the transcription API takes any WAV rate and resamples
/// for its model itself, and upsampling adds no information, only CPU and upload bytes. Higher
/// rates are brought down to this one.
pub const STT_SAMPLE_RATE: u32 = 16_000;

/// How a turn reads the speech of its reply.
pub enum SpeechReading {
    /// Every chunk as it arrives: the carrier plays each sentence as a whole file once it is
    /// complete, so reading it later would start its playback later.
    Eager,
    /// With rests while the call holds plenty of unplayed audio and its event loops keep up
    /// (see `handoff`): the carrier plays audio as it streams.
    Paced(CallLag),
}

/// What the turn asks for.
pub enum TurnInput {
    /// Caller speech to transcribe and answer. `prompt` is the system prompt plus history.
    Speech {
        utterance: Utterance,
        /// The utterance's upload made while the caller spoke, if one was.
        live_upload: Option<Box<dyn LiveUpload>>,
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
    reading: SpeechReading,
    input: TurnInput,
    out_rate: u32,
    out: mpsc::Sender<TurnOutput>,
) {
    let result = match input {
        TurnInput::Say(text) => {
            speak(&pipeline, &metrics, &reading, vec![text], out_rate, &out).await
        }
        TurnInput::Speech {
            utterance,
            live_upload,
            prompt,
        } => {
            let speech = Speech {
                utterance,
                live_upload,
            };
            answer(
                &pipeline, &metrics, &reading, speech, prompt, out_rate, &out,
            )
            .await
        }
        TurnInput::Typed { text, prompt } => {
            let heard = Heard {
                text,
                provider_wait: Duration::ZERO,
            };
            reply(&pipeline, &metrics, &reading, heard, prompt, out_rate, &out).await
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

/// A caller utterance and its upload made while they spoke, if one was.
struct Speech {
    utterance: Utterance,
    live_upload: Option<Box<dyn LiveUpload>>,
}

/// Transcribes the utterance, then answers what was heard.
async fn answer(
    pipeline: &PipelineVersion,
    metrics: &Metrics,
    reading: &SpeechReading,
    speech: Speech,
    prompt: Vec<ChatMessage>,
    out_rate: u32,
    out: &mpsc::Sender<TurnOutput>,
) -> Result<(), TurnError> {
    let spec = &pipeline.config.spec;
    // The call opens uploads while speaking only at rates sent as they are.
    let Speech {
        utterance,
        live_upload,
    } = speech;
    let utterance = to_stt_rate(utterance);
    let started = Instant::now();
    let transcript = match live_upload {
        Some(upload) => final_transcript(upload.finish(utterance, &spec.stt)).await?,
        None => {
            pipeline
                .providers
                .stt
                .transcribe(utterance, &spec.stt)
                .await?
        }
    };
    let stt_wait = started.elapsed();
    metrics.stt_latency.observe(stt_wait.as_secs_f64());
    let heard = Heard {
        text: transcript.text.trim().to_owned(),
        provider_wait: stt_wait,
    };
    reply(pipeline, metrics, reading, heard, prompt, out_rate, out).await
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
    reading: &SpeechReading,
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
        let mut said_nothing = true;
        while let Some(delta) = tokens.next().await {
            let delta = delta?;
            if first {
                metrics
                    .llm_first_token
                    .observe(chat_started.elapsed().as_secs_f64());
                first = false;
            }
            for sentence in splitter.push(&delta) {
                said_nothing = false;
                if sentence_tx.send(sentence).await.is_err() {
                    return Ok(());
                }
            }
        }
        match splitter.finish() {
            Some(rest) => {
                let _ = sentence_tx.send(rest).await;
            }
            None if said_nothing => {
                // The model finished without a word to say (a refusal filtered out, or a
                // prompt asking for silence): the caller hears nothing this turn.
                tracing::warn!("chat completion had no text to speak");
                metrics.unspoken_reply("empty_completion");
            }
            None => {}
        }
        Ok::<(), TurnError>(())
    };
    let tts = async {
        let mut speaker = Speaker::new(pipeline, metrics, reading, out_rate)?;
        speaker.chat_clock = Some((heard_wait, chat_started));
        speaker.say_all(&mut sentence_rx, out).await
    };
    tokio::try_join!(llm, tts)?;
    Ok(())
}

async fn speak(
    pipeline: &PipelineVersion,
    metrics: &Metrics,
    reading: &SpeechReading,
    sentences: Vec<String>,
    out_rate: u32,
    out: &mpsc::Sender<TurnOutput>,
) -> Result<(), TurnError> {
    let (tx, mut rx) = mpsc::channel(sentences.len().max(1));
    for sentence in sentences {
        let _ = tx.try_send(sentence);
    }
    drop(tx);
    Speaker::new(pipeline, metrics, reading, out_rate)?
        .say_all(&mut rx, out)
        .await
}

/// Streams sentences through TTS and resamples the 24 kHz PCM to the call's rate. The sentence
/// after the playing one is requested and its first audio awaited meanwhile (see
/// [`SentenceSpeech`]).
struct Speaker<'a> {
    pipeline: &'a PipelineVersion,
    metrics: &'a Metrics,
    reading: &'a SpeechReading,
    resampler: StreamResampler,
    pcm: Vec<i16>,
    /// Audio at the call's rate not yet handed to the call task.
    resampled: Vec<i16>,
    pacer: HandOffPacer,
    /// Provider time before the chat model's first sentence (speech-to-text), and when the
    /// chat request went out; `None` for fixed text.
    chat_clock: Option<(Duration, Instant)>,
    /// Provider time on the way to this reply's first audio before speech was asked for.
    provider_wait: Duration,
    /// [`TurnOutput::ProviderWait`] went out.
    wait_reported: bool,
}

/// What woke a sentence's playing loop.
enum Step {
    Chunk(Option<ProviderResult<Bytes>>),
    HandOff,
    /// A rest from reading the provider's stream is over.
    Resume,
    NextSentence(Option<String>),
    ReadAhead,
}

impl<'a> Speaker<'a> {
    fn new(
        pipeline: &'a PipelineVersion,
        metrics: &'a Metrics,
        reading: &'a SpeechReading,
        out_rate: u32,
    ) -> Result<Self, TurnError> {
        let resampler = StreamResampler::new(TTS_SAMPLE_RATE, out_rate)
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        Ok(Self {
            pipeline,
            metrics,
            reading,
            resampler,
            pcm: Vec::new(),
            resampled: Vec::new(),
            pacer: HandOffPacer::new(out_rate),
            chat_clock: None,
            provider_wait: Duration::ZERO,
            wait_reported: false,
        })
    }

    /// Asks for `text`'s speech (the request goes out when the stream is first read).
    fn request(&self, text: String) -> SentenceSpeech {
        let spec = &self.pipeline.config.spec.tts;
        let stream = self
            .pipeline
            .providers
            .tts
            .stream_speech(text.clone(), spec);
        SentenceSpeech::new(text, stream)
    }

    /// Speaks every sentence `sentences` yields, in order, until it closes.
    async fn say_all(
        &mut self,
        sentences: &mut mpsc::Receiver<String>,
        out: &mpsc::Sender<TurnOutput>,
    ) -> Result<(), TurnError> {
        let Some(first) = sentences.recv().await else {
            return Ok(());
        };
        if let Some((before, chat_started)) = self.chat_clock {
            self.provider_wait = before + chat_started.elapsed();
        }
        let mut playing = self.request(first);
        let mut upcoming = None;
        let mut more = true;
        loop {
            self.say(&mut playing, sentences, &mut more, &mut upcoming, out)
                .await?;
            playing = match upcoming.take() {
                Some(next) => next,
                None if more => match sentences.recv().await {
                    Some(text) => self.request(text),
                    None => return Ok(()),
                },
                None => return Ok(()),
            };
        }
    }

    /// Hands the audio collected so far to the call task.
    async fn hand_off(&mut self, out: &mpsc::Sender<TurnOutput>) -> Result<(), TurnError> {
        if self.resampled.is_empty() {
            return Ok(());
        }
        let first_audio = self.pacer.before_first();
        self.pacer.handed(self.resampled.len(), Instant::now());
        // The next batch gets a buffer of a batch's size, not one regrown from empty.
        let next = Vec::with_capacity(self.resampled.capacity());
        let batch = std::mem::replace(&mut self.resampled, next);
        send(out, TurnOutput::Audio(batch)).await?;
        if first_audio {
            // The caller is waiting for this: a media thread pausing to batch events (when this
            // turn runs on the turn runtime) takes it now.
            crate::media_thread::cut_pauses_short();
        }
        Ok(())
    }

    /// Plays one sentence; meanwhile takes the next sentence from `sentences` (while `more`),
    /// requests it into `upcoming` and reads it ahead.
    async fn say(
        &mut self,
        speech: &mut SentenceSpeech,
        sentences: &mut mpsc::Receiver<String>,
        more: &mut bool,
        upcoming: &mut Option<SentenceSpeech>,
        out: &mpsc::Sender<TurnOutput>,
    ) -> Result<(), TurnError> {
        send(out, TurnOutput::Sentence(speech.text.clone())).await?;
        let mut first = true;
        let hold = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(hold);
        let mut holding = false;
        let rest = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(rest);
        let mut resting = false;
        // Since when the next chunk has been waited for: tells a live chunk from a backlog.
        let mut waiting_since = Instant::now();
        loop {
            let step = tokio::select! {
                biased;
                chunk = speech.next(), if !resting => Step::Chunk(chunk),
                () = &mut hold, if holding => Step::HandOff,
                () = &mut rest, if resting => Step::Resume,
                text = sentences.recv(), if *more && upcoming.is_none() => Step::NextSentence(text),
                // The next sentence's first byte is awaited, resting or not: that wait is what
                // the prefetch hides. The rest of its audio waits in the socket until it plays.
                () = read_ahead(upcoming), if awaiting_first_byte(upcoming) => Step::ReadAhead,
            };
            let chunk = match step {
                Step::Chunk(Some(chunk)) => chunk?,
                Step::Chunk(None) => break,
                Step::HandOff => {
                    holding = false;
                    self.hand_off(out).await?;
                    continue;
                }
                Step::Resume => {
                    resting = false;
                    waiting_since = Instant::now();
                    continue;
                }
                Step::NextSentence(Some(text)) => {
                    *upcoming = Some(self.request(text));
                    continue;
                }
                Step::NextSentence(None) => {
                    *more = false;
                    continue;
                }
                Step::ReadAhead => continue,
            };
            if first {
                let tts_wait = speech.first_byte().unwrap_or_default();
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
            let now = Instant::now();
            match self.pacer.decide(self.resampled.len(), now) {
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
            if let SpeechReading::Paced(lag) = self.reading
                && let Some(until) = self.pacer.rest(now - waiting_since, lag.behind(), now)
            {
                holding = false;
                self.hand_off(out).await?;
                rest.as_mut().reset(until.into());
                resting = true;
                self.metrics.speech_read_rests.inc();
            }
            waiting_since = Instant::now();
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
    Utterance::linear(samples, STT_SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stt_gets_telephone_audio_as_is_and_high_rates_brought_down() {
        let phone = Utterance {
            mulaw: true,
            ..Utterance::linear(vec![100; 8_000], 8_000)
        };
        let sent = to_stt_rate(phone);
        assert_eq!((sent.samples.len(), sent.sample_rate), (8_000, 8_000));
        assert!(sent.mulaw, "telephone audio keeps its µ-law upload");

        let tts_rate = Utterance::linear(vec![100; 24_000], 24_000);
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
