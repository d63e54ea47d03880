//! One call's recorder: a task fed through a bounded channel by the call task, writing each
//! channel to its spool file through a small buffer. The call task only ever `try_send`s: when
//! the recorder falls behind, frames are dropped and counted, and the call never waits.

use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::spool::{ASSISTANT, CALLER, Meta};
use super::timeline::{Side, cut_at, gap_before, position};
use super::wav::{Coding, RATE};
use super::{Recordings, blocking};
use crate::media::{StreamResampler, l16, mulaw};
use crate::metrics::Metrics;

/// Messages queued per call: about two and a half seconds of both directions' 20 ms frames, so
/// a carrier's burst after a network stall fits (the channel allocates its slots as they fill,
/// so an idle queue costs no more than a short one).
pub const QUEUE: usize = 256;
/// Bytes buffered per channel before a write (a second of L16, two of µ-law).
const BUFFER: usize = 16 * 1024;
/// Samples converted at a time: 100 ms at 24 kHz.
const PIECE: usize = 2_400;

/// What the call task hands its recorder.
#[derive(Debug)]
pub(super) enum Input {
    /// Audio from the carrier, received at `at`.
    Caller {
        at: Instant,
        samples: Vec<i16>,
        rate: u32,
    },
    /// Audio handed to the carrier at `at`.
    Assistant {
        at: Instant,
        samples: Vec<i16>,
        rate: u32,
    },
    /// Barge-in at `at`: the carrier dropped the assistant audio it had not played.
    Cut { at: Instant },
}

/// The call task's handle on its recorder. Dropping it ends the recording; the WAV is
/// assembled and uploaded in the background.
pub struct CallRecorder {
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
}

impl CallRecorder {
    pub(super) fn new(tx: mpsc::Sender<Input>, metrics: Arc<Metrics>) -> Self {
        Self { tx, metrics }
    }

    /// Caller audio as it arrived (any supported rate).
    pub fn caller(&self, samples: Vec<i16>, rate: u32) {
        self.offer(Input::Caller {
            at: Instant::now(),
            samples,
            rate,
        });
    }

    /// Assistant audio as it was handed to the carrier.
    pub fn assistant(&self, samples: Vec<i16>, rate: u32) {
        self.offer(Input::Assistant {
            at: Instant::now(),
            samples,
            rate,
        });
    }

    /// The carrier was told to drop queued reply audio (barge-in).
    pub fn cut(&self) {
        self.offer(Input::Cut { at: Instant::now() });
    }

    /// Whether the recorder has fallen half a queue behind. The call task then yields to it a
    /// few times after handing it a frame, so a burst of caller frames (a carrier catching up
    /// after a network stall hands over dozens in one read) lets the recorder drain between
    /// them instead of overflowing; the call still never waits for it.
    pub fn is_behind(&self) -> bool {
        self.tx.capacity() < QUEUE / 2
    }

    fn offer(&self, input: Input) {
        if self.tx.try_send(input).is_err() {
            self.metrics.recordings.frames_dropped.inc();
        }
    }
}

/// What one recorder task needs to know.
pub(super) struct Job {
    pub recordings: Arc<Recordings>,
    pub stem: String,
    pub meta: Meta,
    pub started: Instant,
}

/// Runs one recording until the call drops its [`CallRecorder`], then hands the finished WAV
/// to the uploads. Every failure is logged and counted; none reaches the call.
pub(super) async fn record(job: Job, mut rx: mpsc::Receiver<Input>) {
    let recordings = job.recordings.clone();
    let call_id = job.meta.call_id.clone();
    let (mut caller, mut assistant) = match open(&job).await {
        Ok(tracks) => tracks,
        Err(err) => {
            tracing::warn!(%call_id, error = %err, "recording could not start");
            recordings.metrics.recordings.errors.inc();
            drop(rx);
            recordings.recorder_done();
            return;
        }
    };
    let at = |t: Instant| position(t.saturating_duration_since(job.started));
    let mut failed = false;
    while let Some(input) = rx.recv().await {
        let result = match input {
            Input::Caller {
                at: t,
                samples,
                rate,
            } => caller.push(at(t), &samples, rate).await,
            Input::Assistant {
                at: t,
                samples,
                rate,
            } => assistant.push(at(t), &samples, rate).await,
            Input::Cut { at: t } => assistant.cut(at(t)).await,
        };
        if let Err(err) = result
            && !failed
        {
            // Logged once: a full disk would otherwise log every frame.
            failed = true;
            tracing::warn!(%call_id, error = %err, "recording write failed");
            recordings.metrics.recordings.errors.inc();
        }
    }
    for track in [&mut caller, &mut assistant] {
        if let Err(err) = track.file.flush().await
            && !failed
        {
            failed = true;
            tracing::warn!(%call_id, error = %err, "recording write failed");
            recordings.metrics.recordings.errors.inc();
        }
    }
    drop((caller, assistant));
    recordings.finish(job.stem, call_id).await;
}

async fn open(job: &Job) -> io::Result<(Track, Track)> {
    let spool = job.recordings.spool.clone();
    let stem = job.stem.clone();
    let meta = job.meta.clone();
    let (caller, assistant) = blocking(move || {
        spool.begin(&stem, &meta)?;
        let caller = std::fs::File::create(spool.channel_path(&stem, CALLER))?;
        let assistant = std::fs::File::create(spool.channel_path(&stem, ASSISTANT))?;
        Ok((caller, assistant))
    })
    .await?;
    let coding = job.meta.coding;
    Ok((
        Track::new(Side::Caller, coding, caller),
        Track::new(Side::Assistant, coding, assistant),
    ))
}

/// One channel of a recording: its place on the timeline and its file.
struct Track {
    side: Side,
    coding: Coding,
    /// Samples written so far (audio and silence): where the next chunk goes.
    cursor: u64,
    file: ChannelFile,
    resampler: Option<StreamResampler>,
    pcm: Vec<i16>,
    coded: Vec<u8>,
}

impl Track {
    fn new(side: Side, coding: Coding, file: std::fs::File) -> Self {
        Self {
            side,
            coding,
            cursor: 0,
            file: ChannelFile::new(file),
            resampler: None,
            pcm: Vec::new(),
            coded: Vec::new(),
        }
    }

    /// Appends `samples` (at `rate`) that arrived at 8 kHz position `at`, after silence if the
    /// channel was quiet since its last chunk. Long chunks (a whole sentence handed over at once)
    /// go through in pieces, so the scratch buffers stay small.
    async fn push(&mut self, at: u64, samples: &[i16], rate: u32) -> io::Result<()> {
        if rate != RATE && self.resampler.as_ref().map(|r| r.from_rate()) != Some(rate) {
            self.resampler = Some(StreamResampler::new(rate, RATE).map_err(io::Error::other)?);
        }
        let len = samples.len() as u64 * u64::from(RATE) / u64::from(rate.max(1));
        let gap = gap_before(self.side, self.cursor, at, len);
        if gap > 0 {
            // Only when the channel was quiet: most frames follow the previous one directly.
            let silence = [self.coding.silence(); 4096];
            let mut gap_bytes = gap as usize * self.coding.bytes_per_sample();
            while gap_bytes > 0 {
                let n = gap_bytes.min(silence.len());
                self.file.append(&silence[..n]).await?;
                gap_bytes -= n;
            }
            self.cursor += gap;
        }
        for piece in samples.chunks(PIECE) {
            self.pcm.clear();
            match self.resampler.as_mut() {
                Some(r) if rate != RATE => {
                    r.push(piece, &mut self.pcm).map_err(io::Error::other)?;
                }
                _ => self.pcm.extend_from_slice(piece),
            }
            self.coded.clear();
            match self.coding {
                Coding::L16 => l16::encode_into(&self.pcm, &mut self.coded),
                Coding::Mulaw => mulaw::encode_into(&self.pcm, &mut self.coded),
            }
            self.file.append(&self.coded).await?;
            self.cursor += self.pcm.len() as u64;
        }
        Ok(())
    }

    /// Cuts audio the carrier never played (barge-in at 8 kHz position `now`).
    async fn cut(&mut self, now: u64) -> io::Result<()> {
        if let Some(to) = cut_at(self.cursor, now) {
            self.file
                .truncate(to * self.coding.bytes_per_sample() as u64)
                .await?;
            self.cursor = to;
        }
        Ok(())
    }
}

/// A spool file written through a buffer of [`BUFFER`] bytes, each full buffer written on the
/// blocking pool. One buffer, not two: `tokio::fs::File` would copy into a second one.
struct ChannelFile {
    /// `None` once a write failed: later writes fail fast.
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    /// Bytes already in the file.
    written: u64,
}

impl ChannelFile {
    fn new(file: std::fs::File) -> Self {
        Self {
            file: Some(file),
            buf: Vec::with_capacity(BUFFER),
            written: 0,
        }
    }

    async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = (BUFFER - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() >= BUFFER {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self.take_file()?;
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&buf);
            (file, buf, result)
        })
        .await
        .map_err(io::Error::other)?;
        result?;
        self.written += buf.len() as u64;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }

    /// Shortens the channel to `len` bytes.
    async fn truncate(&mut self, len: u64) -> io::Result<()> {
        if len >= self.written {
            self.buf.truncate((len - self.written) as usize);
            return Ok(());
        }
        self.buf.clear();
        let mut file = self.take_file()?;
        let file = blocking(move || {
            file.set_len(len)?;
            file.seek(SeekFrom::Start(len))?;
            Ok(file)
        })
        .await?;
        self.written = len;
        self.file = Some(file);
        Ok(())
    }

    fn take_file(&mut self) -> io::Result<std::fs::File> {
        self.file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write to this recording failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn l16(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    async fn track(dir: &std::path::Path, side: Side, coding: Coding) -> (Track, PathBuf) {
        let path = dir.join(format!("{side:?}.raw"));
        let file = std::fs::File::create(&path).unwrap();
        (Track::new(side, coding, file), path)
    }

    #[test]
    fn a_recorder_that_falls_behind_drops_and_counts_but_never_blocks() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = mpsc::channel(2);
        let recorder = CallRecorder::new(tx, metrics.clone());
        for _ in 0..5 {
            recorder.caller(vec![1; 160], 8_000);
        }
        recorder.cut();
        assert_eq!(metrics.recordings.frames_dropped.get(), 4);
        assert!(matches!(rx.try_recv(), Ok(Input::Caller { .. })));
        // A recorder that is gone (its task failed) costs the call nothing either.
        drop(rx);
        recorder.assistant(vec![1; 160], 8_000);
        assert_eq!(metrics.recordings.frames_dropped.get(), 5);
    }

    #[tokio::test]
    async fn quiet_stretches_become_silence_and_jitter_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, path) = track(dir.path(), Side::Caller, Coding::L16).await;
        t.push(160, &[1; 160], 8_000).await.unwrap();
        t.push(330, &[2; 160], 8_000).await.unwrap();
        // Two seconds without frames.
        t.push(16_480, &[3; 160], 8_000).await.unwrap();
        t.file.flush().await.unwrap();
        let samples = l16(&std::fs::read(&path).unwrap());
        assert_eq!(samples.len(), 16_480);
        assert!(samples[..320].iter().all(|&s| s != 0));
        assert!(samples[320..16_320].iter().all(|&s| s == 0));
        assert!(samples[16_320..].iter().all(|&s| s == 3));
    }

    #[tokio::test]
    async fn higher_rates_are_recorded_at_8khz() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, path) = track(dir.path(), Side::Caller, Coding::Mulaw).await;
        for i in 1..=50u64 {
            t.push(i * 160, &[4_000; 320], 16_000).await.unwrap();
        }
        t.file.flush().await.unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        // One second of 16 kHz in, about a second of 8 kHz µ-law out (less the filter delay).
        assert!((7_500..=8_000).contains(&len), "{len}");
    }

    #[tokio::test]
    async fn a_whole_sentence_at_once_goes_through_small_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, path) = track(dir.path(), Side::Assistant, Coding::L16).await;
        // Three seconds of 24 kHz handed over at once (per-sentence playback).
        t.push(0, &[3_000; 72_000], 24_000).await.unwrap();
        t.file.flush().await.unwrap();
        let samples = std::fs::metadata(&path).unwrap().len() / 2;
        assert!((23_500..=24_000).contains(&samples), "{samples}");
        assert_eq!(t.cursor, samples);
        assert!(t.pcm.capacity() <= PIECE && t.coded.capacity() <= PIECE * 2);
    }

    #[tokio::test]
    async fn barge_in_cuts_unplayed_audio_in_the_buffer_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, path) = track(dir.path(), Side::Assistant, Coding::L16).await;
        // A 3 s sentence handed over at once, at 0.
        t.push(0, &[5; 24_000], 8_000).await.unwrap();
        t.cut(8_000).await.unwrap();
        // The next reply starts after the cut, at 1.5 s.
        t.push(12_000, &[6; 160], 8_000).await.unwrap();
        // A cut inside the unflushed buffer.
        t.cut(12_100).await.unwrap();
        t.file.flush().await.unwrap();
        let samples = l16(&std::fs::read(&path).unwrap());
        assert_eq!(samples.len(), 12_100);
        assert!(samples[..8_000].iter().all(|&s| s == 5));
        assert!(samples[8_000..12_000].iter().all(|&s| s == 0));
        assert!(samples[12_000..].iter().all(|&s| s == 6));
    }
}
