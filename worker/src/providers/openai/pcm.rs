//! Reassembly of a raw s16le body into whole samples: the network splits the TTS body wherever
//! it likes, possibly in the middle of a sample.

use bytes::{Bytes, BytesMut};

/// Holds back a trailing odd byte until the next chunk completes it.
#[derive(Debug, Default)]
pub struct SampleAligner {
    carry: Option<u8>,
}

impl SampleAligner {
    /// Returns the whole samples available after `chunk` (possibly empty). Zero-copy when no
    /// byte is carried over from the previous chunk.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let mut joined = match self.carry.take() {
            None => chunk,
            Some(byte) => {
                let mut buf = BytesMut::with_capacity(chunk.len() + 1);
                buf.extend_from_slice(&[byte]);
                buf.extend_from_slice(&chunk);
                buf.freeze()
            }
        };
        if let Some(&last) = joined.last().filter(|_| !joined.len().is_multiple_of(2)) {
            self.carry = Some(last);
            joined.truncate(joined.len() - 1);
        }
        joined
    }

    /// Whether a half sample is pending (at the end of a body this means it was truncated).
    pub fn has_partial_sample(&self) -> bool {
        self.carry.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_odd_boundaries() {
        let mut a = SampleAligner::default();
        let pcm: Vec<u8> = (0u8..20).collect();
        let mut out = Vec::new();
        for chunk in [&pcm[0..3], &pcm[3..4], &pcm[4..4], &pcm[4..9], &pcm[9..20]] {
            let whole = a.push(Bytes::copy_from_slice(chunk));
            assert!(whole.len().is_multiple_of(2));
            out.extend_from_slice(&whole);
        }
        assert_eq!(out, pcm);
        assert!(!a.has_partial_sample());
    }

    #[test]
    fn even_chunks_pass_through_without_copy() {
        let mut a = SampleAligner::default();
        let chunk = Bytes::from_static(&[1, 2, 3, 4]);
        let out = a.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn reports_a_trailing_half_sample() {
        let mut a = SampleAligner::default();
        assert_eq!(a.push(Bytes::from_static(&[9])).len(), 0);
        assert!(a.has_partial_sample());
        assert_eq!(a.push(Bytes::new()).len(), 0);
        assert!(a.has_partial_sample());
    }
}
