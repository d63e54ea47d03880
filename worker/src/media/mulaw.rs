//! G.711 µ-law, table-driven in both directions.
//!
//! The tables are built at compile time from the ITU-T G.711 segment rules (the same arithmetic
//! as the ITU G.191 reference `ulaw_compress`/`ulaw_expand` on 14-bit samples), so encoding a
//! frame is one table lookup per sample and there is nothing to initialise at run time.

/// Linear value of every µ-law code (16-bit scale).
static DECODE: [i16; 256] = build_decode_table();

/// µ-law code of every 14-bit linear value, indexed by `(sample >> 2) + 8192`.
static ENCODE: [u8; 16384] = build_encode_table();

/// Decodes one µ-law byte into a 16-bit linear sample.
#[inline]
pub fn decode_sample(code: u8) -> i16 {
    DECODE[code as usize]
}

/// Encodes one 16-bit linear sample into a µ-law byte.
#[inline]
pub fn encode_sample(sample: i16) -> u8 {
    ENCODE[((sample >> 2) as i32 + 8192) as usize]
}

/// Decodes µ-law bytes, appending the samples to `out` (reused across frames by the caller).
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| decode_sample(c)));
}

/// Encodes linear samples, appending the µ-law bytes to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode_sample(s)));
}

const BIAS: i32 = 0x84;
const CLIP: i32 = 8159;

const fn expand(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 {
        (BIAS - t) as i16
    } else {
        (t - BIAS) as i16
    }
}

/// Compresses a 14-bit linear value (`-8192..=8191`).
const fn compress(value14: i32) -> u8 {
    let (mut magnitude, mask) = if value14 < 0 {
        (-value14, 0x7Fu8)
    } else {
        (value14, 0xFFu8)
    };
    if magnitude > CLIP {
        magnitude = CLIP;
    }
    magnitude += BIAS >> 2;
    let mut segment = 0;
    let mut end = 0x3F;
    while segment < 8 && magnitude > end {
        segment += 1;
        end = (end << 1) | 1;
    }
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let code = ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) as u8;
    code ^ mask
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = expand(i as u8);
        i += 1;
    }
    table
}

const fn build_encode_table() -> [u8; 16384] {
    let mut table = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        table[i] = compress(i as i32 - 8192);
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published G.711 µ-law expansion values (16-bit scale) for the first and last codes of
    /// each sign: the well-known decode table shared by the ITU reference and every codec.
    #[test]
    fn decode_matches_reference_values() {
        let first = [
            -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956,
        ];
        for (code, expected) in first.iter().enumerate() {
            assert_eq!(decode_sample(code as u8), *expected, "code {code:#x}");
        }
        let last = [56, 48, 40, 32, 24, 16, 8, 0];
        for (i, expected) in last.iter().enumerate() {
            assert_eq!(decode_sample(0xF8 + i as u8), *expected);
        }
        assert_eq!(decode_sample(0x80), 32124);
        assert_eq!(decode_sample(0x7F), 0);
        assert_eq!(decode_sample(0x10), -15996);
        assert_eq!(decode_sample(0x70), -120);
    }

    #[test]
    fn encode_matches_reference_values() {
        assert_eq!(encode_sample(0), 0xFF);
        assert_eq!(encode_sample(i16::MAX), 0x80);
        assert_eq!(encode_sample(i16::MIN), 0x00);
        assert_eq!(encode_sample(-32124), 0x00);
        assert_eq!(encode_sample(8), 0xFE);
        assert_eq!(encode_sample(-8), 0x7E);
        assert_eq!(encode_sample(1000), 0xCE);
        assert_eq!(encode_sample(-1000), 0x4E);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            let linear = decode_sample(code);
            let again = encode_sample(linear);
            // 0x7F is negative zero; it re-encodes as positive zero.
            if code == 0x7F {
                assert_eq!(again, 0xFF);
            } else {
                assert_eq!(again, code, "code {code:#x} -> {linear}");
            }
        }
    }

    #[test]
    fn encoding_is_monotonic_in_magnitude() {
        let mut last = decode_sample(encode_sample(0));
        for s in (0..=i16::MAX).step_by(7) {
            let d = decode_sample(encode_sample(s));
            assert!(d >= last, "{s}: {d} < {last}");
            assert!(
                (d as i32 - s as i32).abs() <= 1024,
                "error too large at {s}"
            );
            last = d;
        }
    }

    #[test]
    fn slice_helpers_append() {
        let mut codes = Vec::new();
        encode_into(&[0, 1000, -1000], &mut codes);
        assert_eq!(codes, [0xFF, 0xCE, 0x4E]);
        let mut pcm = vec![7];
        decode_into(&codes, &mut pcm);
        assert_eq!(pcm.len(), 4);
        assert_eq!(pcm[0], 7);
    }
}
