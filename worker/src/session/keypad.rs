//! Keypad (DTMF) input: the digits a caller presses become one caller turn, as speech does.
//!
//! Digits gather into an entry that ends with `#` or when no digit follows for
//! [`INTER_DIGIT`], the usual IVR convention, so "press 1" and "enter your account number" both
//! work. The model sees the entry as a user message ([`caller_text`]).

use std::time::{Duration, Instant};

/// An entry ends when no further digit arrives within this time.
pub const INTER_DIGIT: Duration = Duration::from_millis(1500);
/// Longest entry; a longer run of digits is cut into entries of this length.
pub const MAX_DIGITS: usize = 32;

/// A digit that is not one of `0-9 * # A-D`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a keypad digit: {0:?}")]
pub struct InvalidDigit(pub String);

/// The entry being typed.
#[derive(Debug, Default)]
pub struct Keypad {
    digits: String,
    due: Option<Instant>,
}

impl Keypad {
    /// Adds a digit pressed at `now`; returns the finished entry when this digit ends it.
    pub fn press(&mut self, digit: &str, now: Instant) -> Result<Option<String>, InvalidDigit> {
        let key = match digit.trim().as_bytes() {
            [key @ (b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D' | b'a'..=b'd')] => {
                key.to_ascii_uppercase() as char
            }
            _ => return Err(InvalidDigit(digit.to_owned())),
        };
        if key == '#' {
            // `#` ends an entry; on its own it is the entry.
            if self.digits.is_empty() {
                self.digits.push('#');
            }
            return Ok(self.finish());
        }
        self.digits.push(key);
        if self.digits.len() >= MAX_DIGITS {
            return Ok(self.finish());
        }
        self.due = Some(now + INTER_DIGIT);
        Ok(None)
    }

    /// When the entry ends unless another digit comes.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The entry, once its inter-digit time has passed at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<String> {
        match self.due {
            Some(due) if due <= now => self.finish(),
            _ => None,
        }
    }

    /// Whether digits are waiting for the entry to end (exactly when an end is due).
    pub fn is_typing(&self) -> bool {
        self.due.is_some()
    }

    fn finish(&mut self) -> Option<String> {
        self.due = None;
        let entry = std::mem::take(&mut self.digits);
        (!entry.is_empty()).then_some(entry)
    }
}

/// The user message the model receives for a keypad entry.
pub fn caller_text(entry: &str) -> String {
    format!("Keypad input: {entry}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ends_an_entry() {
        let now = Instant::now();
        let mut keypad = Keypad::default();
        assert_eq!(keypad.press("4", now), Ok(None));
        assert_eq!(keypad.press("2", now), Ok(None));
        assert!(keypad.is_typing());
        assert_eq!(keypad.press("#", now), Ok(Some("42".into())));
        assert_eq!(keypad.due(), None);
        assert!(!keypad.is_typing());
        assert_eq!(
            keypad.press("#", now),
            Ok(Some("#".into())),
            "a lone # is input"
        );
    }

    #[test]
    fn an_entry_ends_after_the_inter_digit_time() {
        let t0 = Instant::now();
        let mut keypad = Keypad::default();
        keypad.press("1", t0).unwrap();
        keypad.press("*", t0 + Duration::from_millis(500)).unwrap();
        let due = t0 + Duration::from_millis(500) + INTER_DIGIT;
        assert_eq!(keypad.due(), Some(due));
        assert_eq!(keypad.take_due(due - Duration::from_millis(1)), None);
        assert_eq!(keypad.take_due(due), Some("1*".into()));
        assert_eq!(keypad.take_due(due + INTER_DIGIT), None);
    }

    #[test]
    fn letters_are_normalized_and_junk_refused() {
        let now = Instant::now();
        let mut keypad = Keypad::default();
        keypad.press("a", now).unwrap();
        keypad.press(" D ", now).unwrap();
        assert_eq!(keypad.press("#", now), Ok(Some("AD".into())));
        for junk in ["", "12", "E", "x", "##"] {
            assert_eq!(keypad.press(junk, now), Err(InvalidDigit(junk.into())));
        }
        assert!(!keypad.is_typing());
    }

    #[test]
    fn long_runs_are_cut() {
        let now = Instant::now();
        let mut keypad = Keypad::default();
        for _ in 0..MAX_DIGITS - 1 {
            assert_eq!(keypad.press("9", now), Ok(None));
        }
        assert_eq!(keypad.press("9", now), Ok(Some("9".repeat(MAX_DIGITS))));
    }
}
