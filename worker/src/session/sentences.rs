//! Splits a streamed LLM reply into sentences as tokens arrive, so the first sentence can go to
//! TTS while the model is still writing the rest.
//!
//! The reply's first piece may end at a clause (`,` `;` `:`) instead, once it is
//! [`FIRST_CLAUSE_MIN_CHARS`] long: the caller hears the reply begin as soon as its opening clause
//! is written rather than its whole first sentence (at 30–60 tokens a second, a long sentence's
//! second half is a few hundred milliseconds). Later sentences are read ahead while earlier ones
//! play, so they keep whole-sentence prosody.

/// Length from which the reply's opening clause is spoken on its own: long enough that the
/// comma is a natural pause ("Thanks for calling Riverside Dental,"), not a stutter ("Sure,").
pub const FIRST_CLAUSE_MIN_CHARS: usize = 24;

/// Accumulates text deltas and yields complete sentences.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    pending: String,
    /// A piece has been yielded: from now on only whole sentences.
    started: bool,
}

impl SentenceSplitter {
    /// Adds a delta and returns every sentence it completed. A sentence ends at `.`, `!`, `?`
    /// followed by whitespace, so "3.5" and "e.g.x" do not split, at a newline, or at a
    /// full-width `。` `！` `？` (Chinese and Japanese put no space after them); the sentence is
    /// only known to be complete once what follows it arrives.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.pending.push_str(delta);
        let mut sentences = Vec::new();
        while let Some(end) = self.next_end() {
            self.started = true;
            let rest = self.pending.split_off(end);
            let sentence = std::mem::replace(&mut self.pending, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                sentences.push(sentence.to_owned());
            }
        }
        sentences
    }

    fn next_end(&self) -> Option<usize> {
        let sentence = sentence_end(&self.pending);
        if self.started {
            return sentence;
        }
        match clause_end(&self.pending) {
            Some(clause) if sentence.is_none_or(|s| clause < s) => Some(clause),
            _ => sentence,
        }
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
        let full_width = matches!(c, '。' | '！' | '？');
        if !full_width && !matches!(c, '.' | '!' | '?') {
            continue;
        }
        // Swallow runs like "?!" or "..." and closing quotes.
        let mut end = i + c.len_utf8();
        while let Some(&(j, next)) = chars.peek() {
            let closes = if full_width {
                matches!(next, '。' | '！' | '？' | '」' | '』' | '）' | '”' | '’')
            } else {
                matches!(next, '.' | '!' | '?' | '"' | '\'' | ')' | '”' | '’')
            };
            if !closes {
                break;
            }
            end = j + next.len_utf8();
            chars.next();
        }
        // Complete once what follows arrives: after a full-width terminator anything (the
        // model may still add a `！`), after `.` whitespace (so "3.5" does not split).
        match chars.peek() {
            Some(_) if full_width => return Some(end),
            Some(&(_, next)) if next.is_whitespace() => return Some(end),
            _ => {}
        }
    }
    None
}

/// Byte index just past the first clause mark (`,` `;` `:` followed by whitespace, or the
/// full-width `，` `、` `；` `：`) that ends at least [`FIRST_CLAUSE_MIN_CHARS`] of text, if any.
fn clause_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let long_enough = || text[..i].trim().chars().count() >= FIRST_CLAUSE_MIN_CHARS;
        let ends_clause = match c {
            ',' | ';' | ':' => chars.peek().is_some_and(|&(_, next)| next.is_whitespace()),
            '，' | '、' | '；' | '：' => chars.peek().is_some(),
            _ => false,
        };
        if ends_clause && long_enough() {
            return Some(end);
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
    fn the_opening_clause_goes_alone_once_it_is_long_enough() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("Thanks for calling Riverside Dental,").is_empty());
        assert_eq!(
            s.push(" how can I help, today? Fine,"),
            [
                "Thanks for calling Riverside Dental,",
                "how can I help, today?"
            ],
            "after the first piece, whole sentences only"
        );
        assert_eq!(s.finish().as_deref(), Some("Fine,"));

        // A short opener stays with its sentence; numbers are no clauses.
        let mut s = SentenceSplitter::default();
        assert!(s.push("Sure, that costs 1,250 dollars").is_empty());
        assert_eq!(
            s.push(" in total. Anything else? "),
            ["Sure, that costs 1,250 dollars in total.", "Anything else?"]
        );
        // A sentence that ends before any long clause goes whole.
        let mut s = SentenceSplitter::default();
        assert_eq!(
            s.push("Yes. Of course, I can do that for you. "),
            ["Yes.", "Of course, I can do that for you."]
        );
    }

    #[test]
    fn chinese_and_japanese_sentences_end_without_spaces() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("你好。").is_empty(), "a terminator may still grow");
        assert_eq!(
            s.push("请问有什么可以帮您？我们"),
            ["你好。", "请问有什么可以帮您？"]
        );
        assert_eq!(s.push("营业到五点。」好"), ["我们营业到五点。」"]);
        assert_eq!(s.finish().as_deref(), Some("好"));
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
