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

/// How often expired entries are swept, at most. A sweep walks every entry under the store's
/// lock; walking on every save cost 140 µs per turn with 10,000 calls held (a fifth of a core
/// at a turn per call every 7 s, all of it serialized), once a second it costs nothing that
/// shows (`benches/session_store.rs`).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// In-process store. Entries of calls that dropped without hanging up are kept for
/// `resume_window`, then swept.
pub struct InMemorySessionStore {
    resume_window: Duration,
    calls: Mutex<Calls>,
}

/// Histories by call id, each with when it was saved, and when expired ones were last swept.
struct Calls {
    by_id: HashMap<String, (Instant, Vec<ChatMessage>)>,
    swept_at: Instant,
}

impl InMemorySessionStore {
    pub fn new(resume_window: Duration) -> Self {
        Self {
            resume_window,
            calls: Mutex::new(Calls {
                by_id: HashMap::new(),
                swept_at: Instant::now(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Calls) -> T) -> T {
        let mut guard = match self.calls.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Entries held, expired or not.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.with(|calls| calls.by_id.len())
    }
}

impl SessionStore for InMemorySessionStore {
    fn load(&self, call_id: &str) -> BoxFuture<'_, Vec<ChatMessage>> {
        let window = self.resume_window;
        let history = self.with(|calls| {
            calls
                .by_id
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
            if now.duration_since(calls.swept_at) >= window.min(SWEEP_EVERY) {
                calls
                    .by_id
                    .retain(|_, (at, _)| now.duration_since(*at) < window);
                calls.swept_at = now;
            }
            calls.by_id.insert(call_id.to_owned(), (now, history));
        });
        Box::pin(std::future::ready(()))
    }

    fn end(&self, call_id: &str) -> BoxFuture<'_, ()> {
        self.with(|calls| calls.by_id.remove(call_id));
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

    /// Calls that dropped without hanging up do not pile up: their entries go in the first
    /// save after they expired and a sweep is due, not on every save.
    #[tokio::test]
    async fn expired_entries_are_swept_at_most_once_per_interval() {
        let window = Duration::from_millis(50);
        let store = InMemorySessionStore::new(window);
        let said = || vec![ChatMessage::new(ChatRole::User, "hi")];
        store.save("dropped-1", said()).await;
        store.save("dropped-2", said()).await;
        tokio::time::sleep(window * 2).await;
        store.save("live", said()).await;
        assert_eq!(store.held(), 1, "expired entries swept");
        assert_eq!(store.load("live").await.len(), 1);

        // With a long window the sweep waits for its interval: a save right after another
        // does not walk the entries.
        let window = Duration::from_secs(10);
        let store = InMemorySessionStore::new(window);
        store.save("a", said()).await;
        store.with(|calls| {
            calls.swept_at = Instant::now();
            calls
                .by_id
                .insert("stale".into(), (Instant::now() - window * 2, said()));
        });
        store.save("b", said()).await;
        assert_eq!(store.held(), 3, "no sweep within the interval");
        assert!(
            store.load("stale").await.is_empty(),
            "expired, so not resumed"
        );
        store.with(|calls| calls.swept_at -= SWEEP_EVERY);
        store.save("c", said()).await;
        assert_eq!(store.held(), 3, "stale swept once the interval passed");
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
