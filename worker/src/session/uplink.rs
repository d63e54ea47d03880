//! Caller audio on its way to a realtime provider.
//!
//! Every `input_audio_buffer.append` is a provider message the call encodes (base64 in JSON)
//! and writes to the provider's socket (TLS in production), so forwarding each 20 ms frame on
//! its own made a quiet realtime call cost about twice a cascade one. While the caller is quiet
//! the frames are collected into chunks of `inputChunkMs` (as LiveKit's agents send 100 ms
//! chunks); a frame that is loud, or falls in the end-of-turn window after speech, goes at once
//! together with whatever was collected, so the provider's VAD hears speech start and stop as
//! early as with frame-by-frame forwarding. The local energy VAD only decides when to send;
//! turns are still the provider's `server_vad`.

use bytes::Bytes;

use callfleet_crds::aipipeline::TurnDetectionSpec;

use crate::media::mulaw;
use crate::media::vad::Vad;

/// The provider's input rate here: µ-law at 8 kHz.
const RATE: usize = 8_000;

/// Batches a call's µ-law uplink by the caller's speech state.
#[derive(Debug)]
pub struct Uplink {
    vad: Vad,
    pending: Vec<u8>,
    chunk_bytes: usize,
}

impl Uplink {
    /// `chunk_ms` of quiet audio per append (one byte per sample at 8 kHz).
    pub fn new(turn_detection: &TurnDetectionSpec, chunk_ms: u32) -> Self {
        let chunk_bytes = (RATE * chunk_ms as usize / 1000).max(1);
        Self {
            vad: Vad::new(turn_detection),
            pending: Vec::with_capacity(chunk_bytes),
            chunk_bytes,
        }
    }

    /// Takes one frame of 8 kHz audio; returns the µ-law audio to append now, if any.
    pub fn push(&mut self, samples: &[i16]) -> Option<Bytes> {
        if samples.is_empty() {
            return None;
        }
        let frame_ms = (samples.len() * 1000 / RATE).max(1) as u32;
        let changed = self.vad.process(samples, frame_ms).is_some();
        mulaw::encode_into(samples, &mut self.pending);
        let now = changed || self.vad.in_utterance() || self.pending.len() >= self.chunk_bytes;
        now.then(|| self.take())
    }

    /// Whether the caller is in confirmed speech (until `silenceMs` of quiet ends their turn).
    pub fn caller_speaking(&self) -> bool {
        self.vad.is_speaking()
    }

    fn take(&mut self) -> Bytes {
        let next = Vec::with_capacity(self.chunk_bytes);
        Bytes::from(std::mem::replace(&mut self.pending, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 160;

    fn spec() -> TurnDetectionSpec {
        TurnDetectionSpec {
            vad_threshold_dbfs: -40,
            silence_ms: 200,
            min_speech_ms: 60,
            barge_in: true,
            early_reply_ms: None,
        }
    }

    fn quiet() -> Vec<i16> {
        vec![0; FRAME]
    }

    fn loud() -> Vec<i16> {
        (0..FRAME)
            .map(|n| if n % 2 == 0 { 8_000 } else { -8_000 })
            .collect()
    }

    /// Bytes appended after each frame (0 when the frame was held).
    fn feed(uplink: &mut Uplink, frames: &[Vec<i16>]) -> Vec<usize> {
        frames
            .iter()
            .map(|f| uplink.push(f).map_or(0, |b| b.len()))
            .collect()
    }

    #[test]
    fn quiet_audio_goes_in_chunks() {
        let mut uplink = Uplink::new(&spec(), 100);
        let sent = feed(&mut uplink, &vec![quiet(); 10]);
        assert_eq!(sent, [0, 0, 0, 0, 800, 0, 0, 0, 0, 800]);
    }

    #[test]
    fn speech_onset_flushes_what_was_held_and_speech_goes_frame_by_frame() {
        let mut uplink = Uplink::new(&spec(), 100);
        let mut frames = vec![quiet(); 2];
        frames.extend(vec![loud(); 5]);
        let sent = feed(&mut uplink, &frames);
        // Two quiet frames held, then the first loud frame carries them along.
        assert_eq!(sent, [0, 0, 480, 160, 160, 160, 160]);
    }

    #[test]
    fn the_end_of_turn_window_goes_frame_by_frame_then_batching_resumes() {
        let mut uplink = Uplink::new(&spec(), 100);
        let mut frames = vec![loud(); 5];
        // 200 ms of silence ends the turn: ten frames, the tenth ends it.
        frames.extend(vec![quiet(); 10]);
        frames.extend(vec![quiet(); 5]);
        let sent = feed(&mut uplink, &frames);
        assert!(sent[..15].iter().all(|&n| n == FRAME), "{sent:?}");
        assert_eq!(sent[15..], [0, 0, 0, 0, 800]);
    }

    #[test]
    fn a_click_is_sent_at_once_but_does_not_stop_batching() {
        let mut uplink = Uplink::new(&spec(), 100);
        let mut frames = vec![loud()];
        frames.extend(vec![quiet(); 5]);
        let sent = feed(&mut uplink, &frames);
        assert_eq!(sent, [160, 0, 0, 0, 0, 800]);
    }

    #[test]
    fn one_frame_chunks_forward_every_frame() {
        let mut uplink = Uplink::new(&spec(), 20);
        assert_eq!(feed(&mut uplink, &vec![quiet(); 3]), [160, 160, 160]);
    }

    #[test]
    fn odd_sized_pieces_still_add_up() {
        let mut uplink = Uplink::new(&spec(), 40);
        let piece = vec![0i16; 100];
        let sent = feed(&mut uplink, &vec![piece; 4]);
        assert_eq!(sent, [0, 0, 0, 400]);
        assert!(uplink.push(&[]).is_none());
    }
}
