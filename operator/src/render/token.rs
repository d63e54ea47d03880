//! The call-token Secret: 32 random bytes that sign and verify per-call tokens
//! (`docs/contracts.md`, "Call tokens").
//!
//! The bytes come in from the caller so this stays pure and testable; the reconciler renders
//! the Secret only while it does not exist, so the key never changes under live calls.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::common::{Component, Context, names, string_map};

/// Key of the generated Secret that holds the HMAC secret.
pub const TOKEN_SECRET_KEY: &str = "token-secret";
/// Where workers and media servers mount the HMAC secret (a directory, so rotations reach
/// running pods).
pub const TOKEN_SECRET_DIR: &str = "/etc/callfleet/auth";
/// The file in [`TOKEN_SECRET_DIR`] (`CALLFLEET_TOKEN_SECRET_FILE`).
pub const TOKEN_SECRET_FILE: &str = "/etc/callfleet/auth/token-secret";

/// Secret name and key the fleet signs tokens with: the user's `spec.auth.tokenSecretRef`, or
/// the generated `<name>-call-token` / `token-secret`.
pub fn secret_ref(ctx: &Context<'_>) -> (String, String) {
    match &ctx.spec.auth.token_secret_ref {
        Some(r) => (r.name.clone(), r.key.clone()),
        None => (names::call_token(ctx.name), TOKEN_SECRET_KEY.to_owned()),
    }
}

/// The generated call-token Secret holding `bytes`.
pub fn secret(ctx: &Context<'_>, bytes: &[u8; 32]) -> Secret {
    let mut meta = ctx.meta(names::call_token(ctx.name), Component::Auth);
    meta.annotations = Some(string_map([(
        "callfleet.dev/generated",
        "Signs call tokens. Generated once by callfleet-operator; delete it to rotate (workers pick up the new key, live calls keep theirs)."
            .to_owned(),
    )]));
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(
            [(TOKEN_SECRET_KEY.to_owned(), ByteString(bytes.to_vec()))]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::call_cluster;
    use super::*;

    #[test]
    fn generated_secret_holds_the_given_bytes() {
        let cc = call_cluster(json!({}));
        let ctx = Context::new(&cc).unwrap();
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        let secret = secret(&ctx, &bytes);
        assert_eq!(secret.metadata.name.as_deref(), Some("support-call-token"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.data.unwrap()[TOKEN_SECRET_KEY].0, bytes.to_vec());
        assert_eq!(
            secret_ref(&ctx),
            ("support-call-token".to_owned(), "token-secret".to_owned())
        );
    }

    #[test]
    fn user_secret_reference_wins() {
        let cc = call_cluster(json!({"auth": {"tokenSecretRef": {"name": "mine"}}}));
        let ctx = Context::new(&cc).unwrap();
        assert_eq!(
            secret_ref(&ctx),
            ("mine".to_owned(), "token-secret".to_owned())
        );
    }
}
