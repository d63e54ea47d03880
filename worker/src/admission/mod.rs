//! Who may start a call: signed call tokens, the per-worker call limit, the per-IP rate of
//! new connections and load shedding when the event loop falls behind. All checks happen
//! before a call task exists, so a rejected connection costs almost nothing.

pub mod capacity;
pub mod overload;
pub mod rate_limit;
pub mod secret;
pub mod token;

pub use capacity::{CallPermit, CapacityGate};
pub use overload::{CallLag, LoadShedder, OverloadPolicy};
pub use rate_limit::{ConnectionRateLimiter, GcraLimiter, RateDecision, Unlimited};
pub use secret::{SecretError, TokenSecret};
pub use token::{TokenError, authentic_call_id, mint_token, verify_token};
