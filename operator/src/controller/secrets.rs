//! Reads the Secrets a CallCluster or AiPipeline references. A missing Secret is a fact for the
//! status conditions (which name it), never a reconcile error.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::GetParams};

use super::error::{Error, Result};
use crate::render::status::ApiKeyState;

/// Pure: whether a fetched Secret (or its absence) holds a non-empty value under `key`.
pub fn api_key_state(secret: Option<&Secret>, key: &str) -> ApiKeyState {
    let Some(secret) = secret else {
        return ApiKeyState::SecretMissing;
    };
    let in_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.0.is_empty());
    let in_string_data = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.is_empty());
    if in_data || in_string_data {
        ApiKeyState::Present
    } else {
        ApiKeyState::KeyMissing
    }
}

fn read_error(name: &str, source: kube::Error) -> Error {
    Error::Read {
        what: format!("Secret {name}"),
        source,
    }
}

/// Reads the Secret from the API server's watch cache and classifies `key` in it. Status only:
/// the cache is at least as new as the watch event that triggered the reconcile, and a read
/// from it costs the API server no etcd round trip.
pub async fn key_state(api: &Api<Secret>, name: &str, key: &str) -> Result<ApiKeyState> {
    let secret = match api.get_with(name, &GetParams::any()).await {
        Ok(secret) => Some(secret),
        Err(kube::Error::Api(status)) if status.is_not_found() => None,
        Err(e) => return Err(read_error(name, e)),
    };
    Ok(api_key_state(secret.as_ref(), key))
}

/// Whether the Secret exists, from the watch cache (metadata only: its contents are not ours
/// to read). For status; decisions that write use [`exists_now`].
pub async fn exists(api: &Api<Secret>, name: &str) -> Result<bool> {
    api.get_metadata_opt_with(name, &GetParams::any())
        .await
        .map(|s| s.is_some())
        .map_err(|e| read_error(name, e))
}

/// Whether the Secret exists, read from etcd: a stale "absent" would make the operator
/// generate and apply a second call-token Secret over the first.
pub async fn exists_now(api: &Api<Secret>, name: &str) -> Result<bool> {
    api.get_metadata_opt(name)
        .await
        .map(|s| s.is_some())
        .map_err(|e| read_error(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn classifies_secrets() {
        assert_eq!(api_key_state(None, "k"), ApiKeyState::SecretMissing);
        let with_data = Secret {
            data: Some(BTreeMap::from([
                ("k".into(), ByteString(b"v".to_vec())),
                ("empty".into(), ByteString(Vec::new())),
            ])),
            ..Secret::default()
        };
        assert_eq!(api_key_state(Some(&with_data), "k"), ApiKeyState::Present);
        assert_eq!(
            api_key_state(Some(&with_data), "other"),
            ApiKeyState::KeyMissing
        );
        assert_eq!(
            api_key_state(Some(&with_data), "empty"),
            ApiKeyState::KeyMissing
        );
        let with_string_data = Secret {
            string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
            ..Secret::default()
        };
        assert_eq!(
            api_key_state(Some(&with_string_data), "k"),
            ApiKeyState::Present
        );
    }
}
