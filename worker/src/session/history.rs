//! The conversation as the language model sees it, capped, and the rule for what part of an
//! interrupted reply the caller actually heard.

use std::collections::VecDeque;

use crate::providers::{ChatMessage, ChatRole};

/// The conversation of one call, without the system prompt, capped at `max_turns` user and
/// assistant pairs (older messages are dropped first; a capped history starts with the caller).
#[derive(Debug, Clone, Default)]
pub struct History {
    messages: VecDeque<ChatMessage>,
    max_turns: usize,
}

impl History {
    pub fn new(max_turns: u32, earlier: Vec<ChatMessage>) -> Self {
        let mut history = Self {
            messages: VecDeque::new(),
            max_turns: max_turns.max(1) as usize,
        };
        for message in earlier {
            history.push(message);
        }
        history
    }

    /// Appends a message (empty text is skipped) and enforces the cap.
    pub fn push(&mut self, message: ChatMessage) {
        if message.content.trim().is_empty() {
            return;
        }
        self.messages.push_back(message);
        let excess = self.messages.len().saturating_sub(self.max_turns * 2);
        if excess == 0 {
            return;
        }
        self.messages.drain(..excess);
        // Turns are not always pairs (a turn whose provider failed has no reply), so the cut
        // can fall between a question and its answer: drop the orphaned answer too, so the
        // model never sees a reply without what it replied to.
        while self
            .messages
            .front()
            .is_some_and(|m| m.role == ChatRole::Assistant)
        {
            self.messages.pop_front();
        }
    }

    /// The prompt for the next reply: system prompt first, then the capped history.
    pub fn prompt(&self, system_prompt: &str) -> Vec<ChatMessage> {
        let mut prompt = Vec::with_capacity(self.messages.len() + 1);
        prompt.push(ChatMessage::new(ChatRole::System, system_prompt));
        prompt.extend(self.messages.iter().cloned());
        prompt
    }

    pub fn messages(&self) -> impl Iterator<Item = &ChatMessage> {
        self.messages.iter()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// One sentence of a reply and where its audio sits in the reply's sample stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokenSentence {
    pub text: String,
    pub start_sample: u64,
    /// `None` while its audio is still arriving.
    pub end_sample: Option<u64>,
    /// The carrier confirmed (by mark) that this sentence finished playing.
    pub confirmed: bool,
}

/// The words of a reply the caller heard, given how many samples were played. Sentences the
/// carrier confirmed count whole; the sentence being played is cut in proportion to the part
/// played, at a word boundary. When `trust_marks` is set (the carrier acknowledges marks), an
/// unconfirmed sentence never counts as whole. A sentence whose length is unknown (`end_sample`
/// is `None`) contributes nothing: the caller should close it with the samples received so far.
pub fn heard_text(sentences: &[SpokenSentence], played_samples: u64, trust_marks: bool) -> String {
    let mut heard: Vec<String> = Vec::new();
    for sentence in sentences {
        let Some(end) = sentence.end_sample else {
            break;
        };
        if sentence.confirmed || (played_samples >= end && !trust_marks) {
            heard.push(sentence.text.clone());
            continue;
        }
        let words: Vec<&str> = sentence.text.split_whitespace().collect();
        let length = end.saturating_sub(sentence.start_sample).max(1);
        let played = played_samples
            .saturating_sub(sentence.start_sample)
            .min(length);
        let mut count = (words.len() as u64 * played / length) as usize;
        if trust_marks && count == words.len() {
            // Not confirmed: the last words may still sit in the carrier's buffer.
            count = count.saturating_sub(1);
        }
        if count > 0 {
            heard.push(words[..count].join(" "));
        }
        break;
    }
    heard.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(text: &str, start: u64, end: u64) -> SpokenSentence {
        SpokenSentence {
            text: text.into(),
            start_sample: start,
            end_sample: Some(end),
            confirmed: false,
        }
    }

    #[test]
    fn caps_turns() {
        let mut h = History::new(2, vec![]);
        for i in 0..5 {
            h.push(ChatMessage::new(ChatRole::User, format!("q{i}")));
            h.push(ChatMessage::new(ChatRole::Assistant, format!("a{i}")));
        }
        assert_eq!(h.len(), 4);
        let prompt = h.prompt("sys");
        assert_eq!(prompt[0].role, ChatRole::System);
        assert_eq!(prompt[1].content, "q3");
        assert_eq!(prompt[4].content, "a4");
        h.push(ChatMessage::new(ChatRole::User, "  "));
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn a_capped_history_starts_with_what_the_caller_said() {
        // Found by the random provider-fault test: a failed turn leaves a question without an
        // answer, and the cap then cut between a later question and its answer.
        let mut h = History::new(2, vec![]);
        h.push(ChatMessage::new(ChatRole::User, "q0 (its reply failed)"));
        for i in 1..3 {
            h.push(ChatMessage::new(ChatRole::User, format!("q{i}")));
            h.push(ChatMessage::new(ChatRole::Assistant, format!("a{i}")));
        }
        assert_eq!(h.messages().next().unwrap().content, "q1");
        h.push(ChatMessage::new(ChatRole::User, "q3"));
        let contents: Vec<_> = h.messages().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["q2", "a2", "q3"]);
        // A greeting before the first question stays until the cap reaches it.
        let greeted = History::new(
            2,
            vec![
                ChatMessage::new(ChatRole::Assistant, "hello"),
                ChatMessage::new(ChatRole::User, "q1"),
            ],
        );
        assert_eq!(greeted.messages().next().unwrap().content, "hello");
    }

    #[test]
    fn heard_by_pacing() {
        let s = [
            sentence("One two three four.", 0, 8000),
            sentence("Five six.", 8000, 12000),
        ];
        assert_eq!(heard_text(&s, 0, false), "");
        assert_eq!(heard_text(&s, 4000, false), "One two");
        assert_eq!(heard_text(&s, 8000, false), "One two three four.");
        assert_eq!(heard_text(&s, 10000, false), "One two three four. Five");
        assert_eq!(
            heard_text(&s, 20000, false),
            "One two three four. Five six."
        );
    }

    #[test]
    fn heard_by_marks() {
        let mut s = vec![
            sentence("One two three four.", 0, 8000),
            sentence("Five six.", 8000, 12000),
        ];
        // Pacing says everything went out, but no mark came back: hold back the last word.
        assert_eq!(heard_text(&s, 20000, true), "One two three");
        s[0].confirmed = true;
        assert_eq!(heard_text(&s, 10000, true), "One two three four. Five");
    }

    #[test]
    fn sentence_still_streaming() {
        let s = [SpokenSentence {
            text: "Alpha beta gamma delta.".into(),
            start_sample: 0,
            end_sample: None,
            confirmed: false,
        }];
        // Its length is unknown, so nothing of it is claimed as heard.
        assert_eq!(heard_text(&s, 5000, false), "");
    }
}
