//! One call: a tokio task that owns all of the call's state (VAD, history, the reply being
//! played), fed by a socket reader task and feeding a socket writer task over bounded channels,
//! so the media path takes no locks.

pub mod history;
pub mod playout;
pub mod sentences;
pub mod store;

pub use store::{InMemorySessionStore, SessionStore};
pub mod call;
pub mod channels;
pub mod connection;
pub mod turn;
