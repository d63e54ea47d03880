//! The spool: every recording lives in a local folder until the bucket has it, so a recording
//! costs the call a small write buffer, not its size in RAM, and nothing is lost when S3 is
//! down or the worker restarts.
//!
//! ```text
//! <spool>/active/<stem>.json            metadata, written first (call id, object key, coding)
//! <spool>/active/<stem>.caller.raw      caller channel, coded mono samples
//! <spool>/active/<stem>.assistant.raw   assistant channel, coded mono samples
//! <spool>/outbox/<stem>.wav             the finished stereo WAV
//! <spool>/outbox/<stem>.json            metadata, moved here last: the WAV is complete
//! ```
//!
//! Channels are separate files so each is written strictly in order however far one runs
//! ahead of the other (a whole sentence handed to the carrier at once); they are interleaved
//! into the WAV when the call ends, or on the next start when the worker died mid-call. All
//! functions here do blocking I/O: callers run them on the blocking pool.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::wav::{self, Coding};

const ACTIVE: &str = "active";
const OUTBOX: &str = "outbox";
/// Samples per channel interleaved at a time when a WAV is assembled.
const MERGE_CHUNK: usize = 16 * 1024;

/// What a spooled recording is: enough to finish and upload it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub call_id: String,
    pub key: String,
    pub coding: Coding,
}

/// A finished recording waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub stem: String,
    pub key: String,
    pub wav: PathBuf,
}

/// The spool folder of one worker.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join(ACTIVE))?;
        fs::create_dir_all(root.join(OUTBOX))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn channel_path(&self, stem: &str, channel: &str) -> PathBuf {
        self.root.join(ACTIVE).join(format!("{stem}.{channel}.raw"))
    }

    fn active_meta(&self, stem: &str) -> PathBuf {
        self.root.join(ACTIVE).join(format!("{stem}.json"))
    }

    fn outbox_meta(&self, stem: &str) -> PathBuf {
        self.root.join(OUTBOX).join(format!("{stem}.json"))
    }

    fn outbox_wav(&self, stem: &str) -> PathBuf {
        self.root.join(OUTBOX).join(format!("{stem}.wav"))
    }

    /// Records that a recording started, before any audio is written.
    pub fn begin(&self, stem: &str, meta: &Meta) -> io::Result<()> {
        write_atomically(&self.active_meta(stem), &serde_json::to_vec(meta)?)
    }

    /// Turns an active recording into a WAV in the outbox and removes its channel files.
    pub fn finish(&self, stem: &str) -> io::Result<Finished> {
        let meta_path = self.active_meta(stem);
        let meta: Meta = serde_json::from_slice(&fs::read(&meta_path)?)?;
        let wav = self.outbox_wav(stem);
        let caller = self.channel_path(stem, CALLER);
        let assistant = self.channel_path(stem, ASSISTANT);
        assemble_wav(&caller, &assistant, meta.coding, &wav)?;
        // The outbox metadata is the commit point: before it, a restart assembles again.
        fs::rename(&meta_path, self.outbox_meta(stem))?;
        remove_if_present(&caller)?;
        remove_if_present(&assistant)?;
        Ok(Finished {
            stem: stem.to_owned(),
            key: meta.key,
            wav,
        })
    }

    /// Forgets a recording the bucket now has.
    pub fn remove(&self, finished: &Finished) -> io::Result<()> {
        remove_if_present(&finished.wav)?;
        remove_if_present(&self.outbox_meta(&finished.stem))
    }

    /// The files a previous run of the worker left, listed before this run records anything,
    /// so recovery never touches a live call's files.
    pub fn leftovers(&self) -> Leftovers {
        Leftovers {
            active: file_names(&self.root.join(ACTIVE)),
            outbox: file_names(&self.root.join(OUTBOX)),
        }
    }

    /// After a restart: finishes recordings whose call was cut by the restart, clears
    /// leftovers of interrupted steps, and returns everything still to upload, oldest first.
    /// A file that cannot be used is reported in `errors` and left for a person to look at.
    pub fn recover(&self, left: &Leftovers) -> Recovered {
        let mut recovered = Recovered::default();
        for stem in stems(&left.active, ".json") {
            if let Err(err) = self.finish(&stem) {
                recovered.errors.push((stem, err));
            }
        }
        // Channel files whose metadata already moved on: their WAV was committed. Temporary
        // files are writes cut short.
        for name in &left.active {
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(self.root.join(ACTIVE).join(name));
            } else if let Some((stem, _)) =
                name.strip_suffix(".raw").and_then(|s| s.rsplit_once('.'))
                && !self.active_meta(stem).exists()
            {
                let _ = fs::remove_file(self.root.join(ACTIVE).join(name));
            }
        }
        // A WAV without metadata is an assembly cut short; its call was finished again above.
        for name in &left.outbox {
            let stale = match name.strip_suffix(".wav") {
                Some(stem) => !self.outbox_meta(stem).exists(),
                None => name.ends_with(".tmp"),
            };
            if stale {
                let _ = fs::remove_file(self.root.join(OUTBOX).join(name));
            }
        }
        let mut outbox = stems(&left.outbox, ".json");
        outbox.extend(stems(&left.active, ".json"));
        outbox.sort();
        for stem in outbox {
            let wav = self.outbox_wav(&stem);
            let meta = self.outbox_meta(&stem);
            if !meta.exists() {
                continue;
            }
            if !wav.exists() {
                // Uploaded; only the metadata's removal was cut short.
                let _ = fs::remove_file(meta);
                continue;
            }
            match fs::read(&meta)
                .and_then(|b| serde_json::from_slice::<Meta>(&b).map_err(io::Error::from))
            {
                Ok(meta) => recovered.finished.push(Finished {
                    stem,
                    key: meta.key,
                    wav,
                }),
                Err(err) => recovered.errors.push((stem, err)),
            }
        }
        recovered
    }
}

/// File names found in the spool at start (see [`Spool::leftovers`]).
#[derive(Debug, Default)]
pub struct Leftovers {
    active: Vec<String>,
    outbox: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.active.is_empty() && self.outbox.is_empty()
    }
}

/// What [`Spool::recover`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub finished: Vec<Finished>,
    pub errors: Vec<(String, io::Error)>,
}

/// Channel file names.
pub const CALLER: &str = "caller";
pub const ASSISTANT: &str = "assistant";

/// Interleaves two coded mono channel files (either may be missing) into a stereo WAV at
/// `out`, streaming through a fixed buffer. Written to a temporary name, synced, then renamed,
/// so `out` is never a half-written file.
pub fn assemble_wav(left: &Path, right: &Path, coding: Coding, out: &Path) -> io::Result<u64> {
    let bps = coding.bytes_per_sample() as u64;
    let (mut left, left_samples) = open_channel(left, bps)?;
    let (mut right, right_samples) = open_channel(right, bps)?;
    let frames = left_samples.max(right_samples);
    let tmp = out.with_extension("wav.tmp");
    let mut writer = BufWriter::with_capacity(64 * 1024, File::create(&tmp)?);
    writer.write_all(&wav::header(coding, frames))?;
    let chunk = MERGE_CHUNK * bps as usize;
    let (mut lbuf, mut rbuf, mut stereo) = (Vec::new(), Vec::new(), Vec::new());
    let (mut left_left, mut right_left) = (left_samples * bps, right_samples * bps);
    let mut frames_left = frames;
    while frames_left > 0 {
        read_up_to(&mut left, &mut lbuf, chunk.min(left_left as usize))?;
        read_up_to(&mut right, &mut rbuf, chunk.min(right_left as usize))?;
        left_left -= lbuf.len() as u64;
        right_left -= rbuf.len() as u64;
        stereo.clear();
        let n = (frames_left as usize).min(MERGE_CHUNK);
        // Pad to `n` frames: the shorter channel ends in silence.
        lbuf.resize(n * bps as usize, coding.silence());
        wav::interleave(&lbuf, &rbuf, coding, &mut stereo);
        writer.write_all(&stereo)?;
        frames_left -= n as u64;
    }
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, out)?;
    Ok(coding.header_len() as u64 + frames * coding.block_align() as u64)
}

/// A channel file and its whole samples (a torn last sample from a crash is ignored); a
/// missing file is an empty channel.
fn open_channel(path: &Path, bps: u64) -> io::Result<(Box<dyn Read>, u64)> {
    match File::open(path) {
        Ok(file) => {
            let samples = file.metadata()?.len() / bps;
            Ok((Box::new(file), samples))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok((Box::new(io::empty()), 0)),
        Err(err) => Err(err),
    }
}

fn read_up_to(reader: &mut dyn Read, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    buf.clear();
    reader.take(len as u64).read_to_end(buf)?;
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Stems of `<stem><suffix>` names, sorted (stems start with the start time).
fn stems(names: &[String], suffix: &str) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| n.strip_suffix(suffix).map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(coding: Coding) -> Meta {
        Meta {
            call_id: "CA1".into(),
            key: "r/2026/01/01/CA1-000000000.wav".into(),
            coding,
        }
    }

    fn samples_of(wav: &Path) -> (hound::WavSpec, Vec<i16>) {
        let reader = hound::WavReader::open(wav).unwrap();
        let spec = reader.spec();
        (spec, reader.into_samples().map(Result::unwrap).collect())
    }

    #[test]
    fn finish_interleaves_channels_of_different_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.begin("s1", &meta(Coding::L16)).unwrap();
        let left: Vec<u8> = [1i16, 2, 3].iter().flat_map(|s| s.to_le_bytes()).collect();
        let right: Vec<u8> = [-1i16].iter().flat_map(|s| s.to_le_bytes()).collect();
        fs::write(spool.channel_path("s1", CALLER), left).unwrap();
        fs::write(spool.channel_path("s1", ASSISTANT), right).unwrap();
        let finished = spool.finish("s1").unwrap();
        assert_eq!(finished.key, "r/2026/01/01/CA1-000000000.wav");
        let (spec, samples) = samples_of(&finished.wav);
        assert_eq!((spec.channels, spec.sample_rate), (2, 8_000));
        assert_eq!(samples, [1, -1, 2, 0, 3, 0]);
        assert!(!spool.channel_path("s1", CALLER).exists());
        spool.remove(&finished).unwrap();
        assert!(file_names(&dir.path().join(OUTBOX)).is_empty());
    }

    #[test]
    fn long_channels_stream_through_the_merge_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let left: Vec<u8> = (0..MERGE_CHUNK * 2 + 7).map(|i| i as u8).collect();
        fs::write(dir.path().join("l"), &left).unwrap();
        let out = dir.path().join("o.wav");
        let len = assemble_wav(
            &dir.path().join("l"),
            &dir.path().join("missing"),
            Coding::Mulaw,
            &out,
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let data = &bytes[Coding::Mulaw.header_len()..];
        assert_eq!(data.len(), left.len() * 2);
        for (i, pair) in data.chunks(2).enumerate() {
            assert_eq!(pair, [left[i], 0xFF], "frame {i}");
        }
    }

    #[test]
    fn recovery_finishes_cut_calls_and_keeps_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // A call cut by a crash: metadata and one channel with a torn last sample.
        spool.begin("a-cut", &meta(Coding::L16)).unwrap();
        fs::write(spool.channel_path("a-cut", CALLER), [5, 0, 6]).unwrap();
        // A finished recording whose upload never happened.
        spool.begin("b-done", &meta(Coding::Mulaw)).unwrap();
        let done = spool.finish("b-done").unwrap();
        // Leftovers of interrupted steps.
        fs::write(spool.channel_path("c-committed", ASSISTANT), [1]).unwrap();
        fs::write(dir.path().join(OUTBOX).join("d-half.wav"), [1]).unwrap();
        fs::write(dir.path().join(OUTBOX).join("e.wav.tmp"), [1]).unwrap();
        fs::write(dir.path().join(OUTBOX).join("f-uploaded.json"), b"{}").unwrap();
        fs::write(dir.path().join(ACTIVE).join("g.json.tmp"), b"{").unwrap();

        let spool = Spool::open(dir.path()).unwrap();
        let recovered = spool.recover(&spool.leftovers());
        assert!(recovered.errors.is_empty(), "{:?}", recovered.errors);
        let stems: Vec<&str> = recovered.finished.iter().map(|f| f.stem.as_str()).collect();
        assert_eq!(stems, ["a-cut", "b-done"]);
        assert_eq!(recovered.finished[1], done);
        let (_, samples) = samples_of(&recovered.finished[0].wav);
        assert_eq!(samples, [5, 0]);
        assert!(file_names(&dir.path().join(ACTIVE)).is_empty());
        assert_eq!(
            file_names(&dir.path().join(OUTBOX)),
            ["a-cut.json", "a-cut.wav", "b-done.json", "b-done.wav"]
        );
    }
}
