//! One call: a tokio task that owns all of the call's state (VAD, history, the reply being
//! played) and its WebSocket, so the media path takes no locks and a frame no channel hop.

pub mod history;
pub mod keypad;
pub mod playout;
pub mod realtime_guard;
pub mod recent;
pub mod sentence_speech;
pub mod sentences;
pub mod store;

pub use store::{InMemorySessionStore, SessionStore};
pub mod call;
pub mod connection;
pub mod handoff;
pub mod inbound_rest;
pub mod socket;
pub mod turn;
pub mod uplink;
pub mod wake_grid;
