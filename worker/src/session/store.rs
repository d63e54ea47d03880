//! Where a call's conversation is kept between turns, so a call that reconnects with the same
//! call id resumes with its history. In memory now; a Redis-backed store (history per turn,
//! shared by all workers) implements the same trait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::providers::ChatMessage;

/// Per-call conversation storage. Called once at call start and once per turn, never on the
/// media path.
pub trait SessionStore: Send + Sync {
    /// The history of `call_id` if it was seen before (a reconnect), else empty.
    fn load(&self, call_id: &str) -> BoxFuture<'_, Vec<ChatMessage>>;
    /// Replaces the stored history of `call_id` after a turn.
    fn save(&self, call_id: &str, history: Vec<ChatMessage>) -> BoxFuture<'_, ()>;
    /// The call ended for good (hang-up): forget it.
    fn end(&self, call_id: &str) -> BoxFuture<'_, ()>;
}

/// In-process store. Entries of calls that dropped without hanging up are kept for
/// `resume_window`, then swept.
pub struct InMemorySessionStore {
    resume_window: Duration,
    calls: Mutex<HashMap<String, (Instant, Vec<ChatMessage>)>>,
}

impl InMemorySessionStore {
    pub fn new(resume_window: Duration) -> Self {
        Self {
            resume_window,
            calls: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (Instant, Vec<ChatMessage>)>) -> T) -> T {
        let mut guard = match self.calls.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl SessionStore for InMemorySessionStore {
    fn load(&self, call_id: &str) -> BoxFuture<'_, Vec<ChatMessage>> {
        let window = self.resume_window;
        let history = self.with(|calls| {
            calls
                .get(call_id)
                .filter(|(at, _)| at.elapsed() < window)
                .map(|(_, h)| h.clone())
                .unwrap_or_default()
        });
        Box::pin(std::future::ready(history))
    }

    fn save(&self, call_id: &str, history: Vec<ChatMessage>) -> BoxFuture<'_, ()> {
        let window = self.resume_window;
        self.with(|calls| {
            let now = Instant::now();
            calls.retain(|_, (at, _)| now.duration_since(*at) < window);
            calls.insert(call_id.to_owned(), (now, history));
        });
        Box::pin(std::future::ready(()))
    }

    fn end(&self, call_id: &str) -> BoxFuture<'_, ()> {
        self.with(|calls| calls.remove(call_id));
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatRole;

    #[tokio::test]
    async fn resume_and_end() {
        let store = InMemorySessionStore::new(Duration::from_secs(60));
        assert!(store.load("c").await.is_empty());
        store
            .save("c", vec![ChatMessage::new(ChatRole::User, "hi")])
            .await;
        assert_eq!(store.load("c").await.len(), 1);
        store.end("c").await;
        assert!(store.load("c").await.is_empty());
    }

    #[tokio::test]
    async fn expired_entries_are_not_resumed() {
        let store = InMemorySessionStore::new(Duration::ZERO);
        store
            .save("c", vec![ChatMessage::new(ChatRole::User, "hi")])
            .await;
        assert!(store.load("c").await.is_empty());
    }
}
