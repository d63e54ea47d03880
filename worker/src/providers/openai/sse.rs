//! Server-sent events decoding (the `text/event-stream` framing of chat completions and
//! streamed transcriptions), incremental because events straddle network chunks.

/// One complete event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental decoder: feed it body chunks as they arrive, get back the events they complete.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// Whether the last byte seen was `\r` (so a following `\n` belongs to the same break).
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Consumes a chunk and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    // Taken and given back, so the line buffer keeps its capacity across lines.
                    let mut line = std::mem::take(&mut self.line);
                    if let Some(event) = self.end_line(&line) {
                        events.push(event);
                    }
                    line.clear();
                    self.line = line;
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
        events
    }

    /// Applies one line; a blank line dispatches the pending event.
    fn end_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseEvent {
                event: self.event.take(),
                data,
            });
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry and unknown fields do not matter here
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn decodes_events_split_across_chunks() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: {\"a\"").is_empty());
        assert!(d.push(b":1}\n").is_empty());
        let events = d.push(b"\ndata: [DONE]\n\n");
        assert_eq!(data(&events), ["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn handles_crlf_comments_event_names_and_multiline_data() {
        let mut d = SseDecoder::default();
        let events = d.push(
            b": keep-alive\r\n\r\nevent: delta\r\ndata: one\r\ndata:two\r\n\r\nid: 7\r\ndata\r\n\r\n",
        );
        assert_eq!(
            events,
            [
                SseEvent {
                    event: Some("delta".into()),
                    data: "one\ntwo".into()
                },
                SseEvent {
                    event: None,
                    data: String::new()
                }
            ]
        );
    }

    #[test]
    fn crlf_split_between_chunks_is_one_break() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: x\r").is_empty());
        // the `\n` completing the CRLF must not count as a blank line
        assert!(d.push(b"\n").is_empty());
        assert_eq!(data(&d.push(b"\r\n")), ["x"]);
    }

    #[test]
    fn unterminated_event_is_not_emitted() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: partial").is_empty());
        assert!(d.push(b"\n").is_empty());
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        let mut d = SseDecoder::default();
        let events = d.push(b"data: \xff\xfe\n\n");
        assert_eq!(events.len(), 1);
    }
}
