//! The in-process session store under many calls (a benchmark, not a test): every call's turn
//! ends with `save`, so its cost with N calls' histories held decides whether the store's one
//! lock is a bottleneck at the seed's 10,000 calls per worker.
//!
//! `cargo bench -p callfleet-tests --bench session_store -- [calls]` (default 10,000): N calls'
//! histories held (four messages each), then 50,000 saves spread over them, timed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use callfleet_worker::providers::{ChatMessage, ChatRole};
use callfleet_worker::session::{InMemorySessionStore, SessionStore};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let ids: Vec<String> = (0..calls).map(|i| format!("CA{i:032x}")).collect();
    let history = vec![
        ChatMessage::new(ChatRole::User, "I would like to move my appointment."),
        ChatMessage::new(ChatRole::Assistant, "Sure. Which day suits you?"),
        ChatMessage::new(ChatRole::User, "Thursday morning, please."),
        ChatMessage::new(ChatRole::Assistant, "Thursday at ten is free."),
    ];
    let store = InMemorySessionStore::new(Duration::from_secs(600));
    for id in &ids {
        store.save(id, history.clone()).await;
    }
    let saves = 50_000;
    let histories: Vec<Vec<ChatMessage>> = (0..saves).map(|_| history.clone()).collect();
    let started = Instant::now();
    for (n, history) in histories.into_iter().enumerate() {
        store.save(black_box(&ids[n % calls]), history).await;
    }
    let elapsed = started.elapsed();
    println!(
        "{calls} calls held, {saves} saves: {:.2} µs per save ({:.0} turns per second on one core)",
        elapsed.as_secs_f64() * 1e6 / saves as f64,
        saves as f64 / elapsed.as_secs_f64(),
    );
}
