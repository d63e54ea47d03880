//! One sentence's speech on its way from the TTS provider.
//!
//! A reply is spoken sentence by sentence, each its own TTS request. Asked for only when the
//! sentence before it has been received, a sentence's speech arrives a time-to-first-byte after
//! that, and when the provider streams no faster than the caller listens (or its first byte is
//! slow) the caller hears that wait as a pause between sentences. So the next sentence is
//! requested as soon as the chat model has written it, and its first audio is read ahead while
//! the sentence before it is still arriving. The rest of its audio waits in the socket until it
//! is the sentence being read: read ahead, each chunk cost a wake-up and a read of its own
//! beside the playing sentence's, where afterwards the backlog takes a few reads (2.3% less CPU
//! per call in conversation, 2026-12-04).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::providers::{ProviderResult, TTS_SAMPLE_RATE};

/// The most audio [`SentenceSpeech::read_ahead`] holds for a sentence that is not playing yet:
/// one second of 24 kHz 16-bit PCM. What removes the pause is that the request went out early;
/// once the sentence plays, the rest streams live, so more read-ahead would only cost memory
/// (measured: 2 s added ~20 KiB per call with a provider streaming at twice real time). Beyond
/// it the provider's stream waits (TCP flow control), so a long sentence costs no more memory
/// than a short one. The speaker reads ahead only the first chunk (see the module doc).
pub const READ_AHEAD_BYTES: usize = TTS_SAMPLE_RATE as usize * 2;

/// A sentence whose speech has been requested.
pub struct SentenceSpeech {
    pub text: String,
    requested: Instant,
    stream: BoxStream<'static, ProviderResult<Bytes>>,
    ahead: VecDeque<ProviderResult<Bytes>>,
    ahead_bytes: usize,
    /// How long the first chunk took, once it came.
    first_byte: Option<Duration>,
    /// The stream ended or failed: nothing more to read from it.
    finished: bool,
}

impl SentenceSpeech {
    /// Wraps the provider's stream for `text`; its request goes out when it is first read.
    pub fn new(text: String, stream: BoxStream<'static, ProviderResult<Bytes>>) -> Self {
        Self {
            text,
            requested: Instant::now(),
            stream,
            ahead: VecDeque::new(),
            ahead_bytes: 0,
            first_byte: None,
            finished: false,
        }
    }

    /// Time from the request to the first chunk, once it arrived.
    pub fn first_byte(&self) -> Option<Duration> {
        self.first_byte
    }

    /// Reads one more chunk ahead. Never completes while the read-ahead is full or the stream
    /// has ended, so it can wait in a `select!` alongside the playing sentence. Cancel-safe.
    pub async fn read_ahead(&mut self) {
        if self.finished || self.ahead_bytes >= READ_AHEAD_BYTES {
            return std::future::pending().await;
        }
        if let Some(item) = self.read().await {
            // A chunk is a slice of the HTTP connection's read buffer; held for a second it
            // would keep that whole buffer alive and make the connection allocate another, so
            // what waits is copied out (a few KiB).
            let item = item.map(|chunk| Bytes::copy_from_slice(&chunk));
            if let Ok(chunk) = &item {
                self.ahead_bytes += chunk.len();
            }
            self.ahead.push_back(item);
        }
    }

    /// The next chunk to play: what was read ahead, then the live stream; `None` at the end. A
    /// failure read ahead is returned here, in its place in the sentence. Cancel-safe.
    pub async fn next(&mut self) -> Option<ProviderResult<Bytes>> {
        if let Some(item) = self.ahead.pop_front() {
            if let Ok(chunk) = &item {
                self.ahead_bytes -= chunk.len();
            }
            return Some(item);
        }
        if self.finished {
            return None;
        }
        self.read().await
    }

    async fn read(&mut self) -> Option<ProviderResult<Bytes>> {
        let item = self.stream.next().await;
        match &item {
            Some(Ok(_)) => {
                self.first_byte
                    .get_or_insert_with(|| self.requested.elapsed());
            }
            None | Some(Err(_)) => self.finished = true,
        }
        item
    }
}

/// Whether the sentence after the playing one was requested (or is yet to be) and its speech has
/// not begun to arrive.
pub fn awaiting_first_byte(next: &Option<SentenceSpeech>) -> bool {
    next.as_ref()
        .is_some_and(|speech| speech.first_byte.is_none() && !speech.finished)
}

/// Reads ahead for the sentence after the playing one, if there is one (else waits forever).
pub async fn read_ahead(next: &mut Option<SentenceSpeech>) {
    match next {
        Some(speech) => speech.read_ahead().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderError;
    use futures::stream;
    use std::time::Duration;

    fn speech(chunks: Vec<ProviderResult<Bytes>>) -> SentenceSpeech {
        SentenceSpeech::new("Hi.".into(), stream::iter(chunks).boxed())
    }

    fn chunk(len: usize) -> ProviderResult<Bytes> {
        Ok(Bytes::from(vec![0u8; len]))
    }

    async fn ready<F: std::future::Future>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .ok()
    }

    #[tokio::test]
    async fn read_ahead_chunks_play_first_in_order_then_the_live_stream() {
        let mut s = speech(vec![chunk(2), chunk(4), chunk(6)]);
        s.read_ahead().await;
        s.read_ahead().await;
        assert!(s.first_byte().is_some());
        let mut lengths = Vec::new();
        while let Some(item) = s.next().await {
            lengths.push(item.unwrap().len());
        }
        assert_eq!(lengths, [2, 4, 6]);
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn read_ahead_stops_at_its_bound() {
        let half = READ_AHEAD_BYTES / 2;
        let mut s = speech(vec![chunk(half), chunk(half), chunk(2)]);
        s.read_ahead().await;
        s.read_ahead().await;
        assert!(ready(s.read_ahead()).await.is_none(), "full: waits");
        s.next().await.unwrap().unwrap();
        assert!(ready(s.read_ahead()).await.is_some(), "room again");
        assert_eq!(s.ahead.len(), 2);
    }

    #[tokio::test]
    async fn a_failure_read_ahead_comes_out_in_its_place_and_ends_the_sentence() {
        let mut s = speech(vec![
            chunk(2),
            Err(ProviderError::Timeout("stream stalled")),
            chunk(4),
        ]);
        s.read_ahead().await;
        s.read_ahead().await;
        assert!(ready(s.read_ahead()).await.is_none(), "finished: waits");
        assert!(s.next().await.unwrap().is_ok());
        assert!(s.next().await.unwrap().is_err());
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn a_next_sentence_awaits_its_first_byte_until_a_chunk_or_the_end_came() {
        assert!(!awaiting_first_byte(&None));
        let mut next = Some(speech(vec![chunk(2), chunk(4)]));
        assert!(awaiting_first_byte(&next), "not requested yet");
        read_ahead(&mut next).await;
        assert!(!awaiting_first_byte(&next));
        let mut failed = Some(speech(vec![Err(ProviderError::Timeout("no first byte"))]));
        read_ahead(&mut failed).await;
        assert!(!awaiting_first_byte(&failed), "nothing more to wait for");
    }

    #[tokio::test]
    async fn no_next_sentence_never_reads() {
        let mut none = None;
        assert!(ready(read_ahead(&mut none)).await.is_none());
    }
}
