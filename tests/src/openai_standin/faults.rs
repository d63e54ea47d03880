//! Failure injection: rules saying which endpoint fails how, always or for the next N requests.
//! Tests flip them at run time through the handle or `POST /admin/faults`.

use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The stand-in's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Transcriptions,
    Chat,
    Speech,
    Realtime,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Transcriptions,
        Endpoint::Chat,
        Endpoint::Speech,
        Endpoint::Realtime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Transcriptions => "transcriptions",
            Endpoint::Chat => "chat",
            Endpoint::Speech => "speech",
            Endpoint::Realtime => "realtime",
        }
    }
}

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 429 with `retry-after-ms` (and `Retry-After` in whole seconds, rounded up).
    RateLimit { retry_after_ms: u64 },
    /// An HTTP 5xx error.
    ServerError { status: u16 },
    /// Never answer (no headers); the client must time out.
    Stall,
    /// Answer and send the first chunk/event, then send nothing more, without closing.
    StallMidStream,
    /// Answer and send the first chunk/event, then drop the connection.
    DropMidStream,
    /// Send the response headers, then nothing, without closing; on the realtime endpoint the
    /// session opens and takes audio but never answers.
    StallAfterHeaders,
    /// Realtime: drop the connection as the caller stops speaking, before it says so and before
    /// their words are committed and transcribed (what a reset connection does to events in
    /// flight). Elsewhere the same as `DropMidStream`.
    DropAfterSpeech,
    /// Realtime: drop the connection just after saying the caller stopped speaking, before
    /// their words are committed and transcribed. Elsewhere the same as `DropMidStream`.
    DropBeforeTranscript,
    /// Realtime: say the caller started speaking, then send nothing more, without closing (a
    /// session wedged mid-turn). Elsewhere the same as `StallMidStream`.
    StallInSpeech,
    /// Realtime: every response the session starts fails at once (`response.done` with status
    /// `failed` and a server error, no audio), as when the model errs; the session stays open.
    /// Elsewhere the same as `DropMidStream`.
    FailResponse,
    /// A refusal the provider filtered out: chat streams no text and finishes with
    /// `finish_reason: "content_filter"`; on the realtime endpoint every response the session
    /// starts ends at once `incomplete` with reason `content_filter` and no audio, and the
    /// session stays open. Elsewhere the same as `DropMidStream`.
    ContentFilter,
    /// Realtime: every event is preceded by one the client cannot decode (not JSON, or an
    /// audio delta whose audio is not base64), as from a provider that changed its format.
    /// Elsewhere the same as `DropMidStream`.
    GarbageEvents,
}

/// One injected fault: for `endpoint` (all when `None`), for the next `count` requests
/// (forever when `None`), after letting `skip` requests through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    pub fault: Fault,
    #[serde(default)]
    pub count: Option<u32>,
    /// Requests answered normally before the fault applies (e.g. the second sentence's speech).
    #[serde(default)]
    pub skip: u32,
}

impl FaultRule {
    pub fn new(endpoint: Option<Endpoint>, fault: Fault, count: Option<u32>) -> Self {
        Self {
            endpoint,
            fault,
            count,
            skip: 0,
        }
    }

    /// The same rule, applying only after `skip` requests went through.
    pub fn after(self, skip: u32) -> Self {
        Self { skip, ..self }
    }
}

/// `<endpoint|all>:<429|5xx|stall|stall_mid_stream|drop|stall_after_headers|drop_after_speech|drop_before_transcript|stall_in_speech|fail_response|garbage_events>[:count]`.
impl FromStr for FaultRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let (endpoint, kind, count) = match parts.as_slice() {
            [e, k] => (*e, *k, None),
            [e, k, c] => (*e, *k, Some(*c)),
            _ => {
                return Err(format!(
                    "fault {text:?}: expected <endpoint|all>:<kind>[:count]"
                ));
            }
        };
        let endpoint = match endpoint {
            "all" => None,
            name => Some(
                Endpoint::ALL
                    .into_iter()
                    .find(|e| e.name() == name)
                    .ok_or_else(|| format!("fault {text:?}: unknown endpoint {name:?}"))?,
            ),
        };
        let fault = match kind {
            "429" => Fault::RateLimit {
                retry_after_ms: 1000,
            },
            "stall" => Fault::Stall,
            "stall_mid_stream" => Fault::StallMidStream,
            "drop" => Fault::DropMidStream,
            "stall_after_headers" => Fault::StallAfterHeaders,
            "drop_after_speech" => Fault::DropAfterSpeech,
            "drop_before_transcript" => Fault::DropBeforeTranscript,
            "garbage_events" => Fault::GarbageEvents,
            "stall_in_speech" => Fault::StallInSpeech,
            "fail_response" => Fault::FailResponse,
            status => match status.parse::<u16>() {
                Ok(status @ 500..=599) => Fault::ServerError { status },
                _ => return Err(format!("fault {text:?}: unknown kind {kind:?}")),
            },
        };
        let count = count
            .map(|c| {
                c.parse::<u32>()
                    .map_err(|_| format!("fault {text:?}: bad count {c:?}"))
            })
            .transpose()?;
        Ok(FaultRule::new(endpoint, fault, count))
    }
}

/// The active rules. The first rule matching an endpoint applies; counted rules expire.
#[derive(Debug, Default)]
pub struct FaultBook {
    rules: Mutex<Vec<FaultRule>>,
}

impl FaultBook {
    pub fn new(rules: Vec<FaultRule>) -> Self {
        Self {
            rules: Mutex::new(rules),
        }
    }

    pub fn add(&self, rule: FaultRule) {
        self.lock().push(rule);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().clone()
    }

    /// The fault for one request to `endpoint`, consuming one use of a counted rule.
    pub fn take(&self, endpoint: Endpoint) -> Option<Fault> {
        let mut rules = self.lock();
        let index = rules
            .iter()
            .position(|r| r.endpoint.is_none_or(|e| e == endpoint))?;
        let rule = &mut rules[index];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let fault = rule.fault;
        match &mut rule.count {
            Some(0) | Some(1) => {
                rules.remove(index);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultRule>> {
        // A panic while holding this lock cannot leave the list inconsistent.
        self.rules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_can_let_requests_through_first() {
        let book = FaultBook::new(vec![
            FaultRule::new(
                Some(Endpoint::Speech),
                Fault::ServerError { status: 500 },
                Some(1),
            )
            .after(1),
        ]);
        assert_eq!(book.take(Endpoint::Chat), None);
        assert_eq!(book.take(Endpoint::Speech), None);
        assert_eq!(
            book.take(Endpoint::Speech),
            Some(Fault::ServerError { status: 500 })
        );
        assert_eq!(book.take(Endpoint::Speech), None);
    }

    #[test]
    fn parses_cli_rules() {
        assert_eq!(
            "chat:429:2".parse::<FaultRule>().unwrap(),
            FaultRule::new(
                Some(Endpoint::Chat),
                Fault::RateLimit {
                    retry_after_ms: 1000
                },
                Some(2)
            )
        );
        assert_eq!(
            "all:503".parse::<FaultRule>().unwrap(),
            FaultRule::new(None, Fault::ServerError { status: 503 }, None)
        );
        assert_eq!(
            "speech:drop".parse::<FaultRule>().unwrap().fault,
            Fault::DropMidStream
        );
        assert_eq!(
            "realtime:garbage_events"
                .parse::<FaultRule>()
                .unwrap()
                .fault,
            Fault::GarbageEvents
        );
        assert_eq!(
            "realtime:stall_in_speech:1".parse::<FaultRule>().unwrap(),
            FaultRule::new(Some(Endpoint::Realtime), Fault::StallInSpeech, Some(1))
        );
        assert_eq!(
            "realtime:fail_response".parse::<FaultRule>().unwrap().fault,
            Fault::FailResponse
        );
        assert!("speech:404".parse::<FaultRule>().is_err());
        assert!("tts:stall".parse::<FaultRule>().is_err());
        assert!("chat".parse::<FaultRule>().is_err());
        assert!("chat:stall:x".parse::<FaultRule>().is_err());
    }

    #[test]
    fn counted_rules_expire_and_endpoints_match() {
        let book = FaultBook::default();
        book.add(FaultRule::new(Some(Endpoint::Chat), Fault::Stall, Some(2)));
        book.add(FaultRule::new(None, Fault::DropMidStream, None));
        assert_eq!(book.take(Endpoint::Speech), Some(Fault::DropMidStream));
        assert_eq!(book.take(Endpoint::Chat), Some(Fault::Stall));
        assert_eq!(book.take(Endpoint::Chat), Some(Fault::Stall));
        assert_eq!(book.take(Endpoint::Chat), Some(Fault::DropMidStream));
        book.clear();
        assert_eq!(book.take(Endpoint::Chat), None);
    }

    #[test]
    fn json_shape() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"endpoint":"speech","fault":{"kind":"rate_limit","retry_after_ms":50},"count":1}"#,
        )
        .unwrap();
        assert_eq!(
            rule,
            FaultRule::new(
                Some(Endpoint::Speech),
                Fault::RateLimit { retry_after_ms: 50 },
                Some(1)
            )
        );
    }
}
