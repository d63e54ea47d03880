//! Call tokens, exactly as `docs/contracts.md` defines them:
//! `<call-id>.<expiry unix seconds>.<base64url_nopad(HMAC-SHA256(secret, "<call-id>.<expiry>"))>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::TokenSecret;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. The messages are safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no call token was presented")]
    Missing,
    #[error("the call token is malformed")]
    Malformed,
    #[error("the call token signature is invalid")]
    BadSignature,
    #[error("the call token expired")]
    Expired,
    #[error("the call token was issued for another call")]
    WrongCall,
}

/// Mints a token for `call_id` that expires at `expires_at` (unix seconds).
pub fn mint_token(secret: &TokenSecret, call_id: &str, expires_at: u64) -> String {
    let payload = format!("{call_id}.{expires_at}");
    let signature = URL_SAFE_NO_PAD.encode(sign(secret, &payload).finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Checks `token` for the call `call_id` at time `now` (unix seconds): signature first (in
/// constant time, `Mac::verify_slice`), then expiry, then that the token names this call.
pub fn verify_token(
    secret: &TokenSecret,
    token: &str,
    call_id: &str,
    now: u64,
) -> Result<(), TokenError> {
    if authentic_call_id(secret, token, now)? != call_id {
        return Err(TokenError::WrongCall);
    }
    Ok(())
}

/// Checks signature and expiry only, returning the call id the token names. Used before the
/// call id is known (at the HTTP upgrade) to let authenticated carriers past the per-IP rate
/// limit: a FreeSWITCH pod opens every one of its calls from the same address.
pub fn authentic_call_id<'t>(
    secret: &TokenSecret,
    token: &'t str,
    now: u64,
) -> Result<&'t str, TokenError> {
    // From the right: the signature and the expiry hold no dots, the call id may (SIP
    // Call-IDs look like `a84b4c76e66710@pc33.atlanta.com`).
    let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (token_call_id, expiry) = payload.rsplit_once('.').ok_or(TokenError::Malformed)?;
    if token_call_id.is_empty() || expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(TokenError::Malformed);
    }
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    sign(secret, payload)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if expiry <= now {
        return Err(TokenError::Expired);
    }
    Ok(token_call_id)
}

fn sign(secret: &TokenSecret, payload: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(payload.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> TokenSecret {
        TokenSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256("0123456789abcdef0123456789abcdef", "CA123.2000000000"), computed
        // independently with Python's hmac module.
        let token = mint_token(&secret(), "CA123", 2_000_000_000);
        assert_eq!(
            token,
            "CA123.2000000000.23R29V5nIjJY5npH1Mc4N-yn0NOlKedg4crNfctheYk"
        );
    }

    #[test]
    fn valid_token_passes() {
        let token = mint_token(&secret(), "call-1", 1_000);
        assert_eq!(verify_token(&secret(), &token, "call-1", 999), Ok(()));
        assert_eq!(authentic_call_id(&secret(), &token, 999), Ok("call-1"));
        assert_eq!(
            authentic_call_id(&secret(), &token, 1_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn call_ids_may_hold_dots() {
        // SIP Call-IDs do; found by the property tests (the expiry was read from the left).
        let id = "a84b4c76e66710@pc33.atlanta.com";
        let token = mint_token(&secret(), id, 1_000);
        assert_eq!(authentic_call_id(&secret(), &token, 999), Ok(id));
        assert_eq!(verify_token(&secret(), &token, id, 999), Ok(()));
    }

    #[test]
    fn rejections() {
        let s = secret();
        let token = mint_token(&s, "call-1", 1_000);
        assert_eq!(
            verify_token(&s, &token, "call-1", 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_token(&s, &token, "call-2", 10),
            Err(TokenError::WrongCall)
        );
        let other = TokenSecret::from_bytes(b"another secret".to_vec()).unwrap();
        assert_eq!(
            verify_token(&other, &token, "call-1", 10),
            Err(TokenError::BadSignature)
        );
        // Extending the expiry breaks the signature.
        let forged = token.replace(".1000.", ".9000.");
        assert_eq!(
            verify_token(&s, &forged, "call-1", 10),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "abc",
            "a.b",
            "call-1.x.sig",
            "call-1..sig",
            ".5.sig",
            "c.5.!!!",
        ] {
            assert_eq!(
                verify_token(&s, bad, "call-1", 1),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        // A truncated signature is a bad signature, not a panic.
        let short = &token[..token.len() - 3];
        assert_eq!(
            verify_token(&s, short, "call-1", 10),
            Err(TokenError::BadSignature)
        );
    }
}
