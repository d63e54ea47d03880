//! Splits a streamed LLM reply into sentences as tokens arrive, so the first sentence can go to
//! TTS while the model is still writing the rest.

/// Accumulates text deltas and yields complete sentences.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    pending: String,
}

impl SentenceSplitter {
    /// Adds a delta and returns every sentence it completed. A sentence ends at `.`, `!`, `?`
    /// or a newline followed by whitespace, so "3.5" and "e.g.x" do not split; the sentence is
    /// only known to be complete once the whitespace after it arrives.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.pending.push_str(delta);
        let mut sentences = Vec::new();
        while let Some(end) = sentence_end(&self.pending) {
            let rest = self.pending.split_off(end);
            let sentence = std::mem::replace(&mut self.pending, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                sentences.push(sentence.to_owned());
            }
        }
        sentences
    }

    /// The text left when the stream ended, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// Byte index just past the first complete sentence's terminator run, if any.
fn sentence_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            return Some(i + 1);
        }
        if matches!(c, '.' | '!' | '?') {
            // Swallow runs like "?!" or "..." and closing quotes.
            let mut end = i + c.len_utf8();
            while let Some(&(j, next)) = chars.peek() {
                if matches!(next, '.' | '!' | '?' | '"' | '\'' | ')' | '”' | '’') {
                    end = j + next.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(_, next)) if next.is_whitespace() => return Some(end),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_as_tokens_arrive() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("Hello").is_empty());
        assert!(s.push(" there.").is_empty());
        assert_eq!(s.push(" How"), ["Hello there."]);
        assert_eq!(s.push(" are you?! I'm fine"), ["How are you?!"]);
        assert_eq!(s.finish().as_deref(), Some("I'm fine"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn numbers_and_newlines() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("It costs 3.5 dollars").is_empty());
        assert_eq!(
            s.push("\nNext line. "),
            ["It costs 3.5 dollars", "Next line."]
        );
        assert_eq!(s.push("\"Quoted.\" Then"), ["\"Quoted.\""]);
        assert_eq!(s.finish().as_deref(), Some("Then"));
    }

    #[test]
    fn multibyte_text() {
        let mut s = SentenceSplitter::default();
        assert_eq!(
            s.push("Ça va? Très bien… merci. "),
            ["Ça va?", "Très bien… merci."]
        );
    }
}
