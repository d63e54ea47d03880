//! Which TLS certificates a pipeline's provider connections trust: the public roots, plus the
//! AiPipeline's `provider.caBundle` when the endpoint sits behind a private CA (a self-hosted
//! OpenAI-compatible server). Both transports get the same roots: the HTTP pools and the
//! realtime WebSocket.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};

/// Why a CA bundle (a pipeline's `caBundle`, the smoke client's `--ca-file`) cannot be used. A
/// pipeline version carrying a bad one is refused, so calls keep the previous version instead
/// of failing every TLS handshake.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("no PEM certificate in it (expected -----BEGIN CERTIFICATE----- blocks)")]
    NoCertificate,
    #[error("not valid PEM: {0}")]
    BadPem(String),
    #[error("certificate {index} is not a usable CA certificate: {reason}")]
    BadCertificate { index: usize, reason: String },
}

/// The certificates of a `caBundle`, in order. Other PEM blocks (e.g. a key pasted by
/// mistake) are ignored rather than trusted.
pub fn parse_ca_bundle(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TrustError::BadPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate);
    }
    // rustls accepts a root only if webpki can parse it as a trust anchor: check now, at
    // reload, not at the first call's handshake.
    add_roots(&mut rustls::RootCertStore::empty(), &certs)?;
    Ok(certs)
}

/// Adds `certs` to `roots`, naming the first one that is not a usable trust anchor.
fn add_roots(
    roots: &mut rustls::RootCertStore,
    certs: &[CertificateDer<'static>],
) -> Result<(), TrustError> {
    for (index, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| TrustError::BadCertificate {
                index: index + 1,
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// A rustls client config trusting the public roots and `extra`, for the realtime WebSocket.
pub fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    add_roots(&mut roots, extra)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::BadCertificate {
            index: 0,
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_of_a_bundle_is_kept_and_other_blocks_are_ignored() {
        let first = callfleet_tests::tls::TestPki::generate().expect("CA");
        let second = callfleet_tests::tls::TestPki::generate().expect("CA");
        // A key pasted along with the certificates is not trusted, and not an error.
        let bundle = format!("{}{}{}", first.ca_pem, first.server_key_pem, second.ca_pem);
        let certs = parse_ca_bundle(&bundle).expect("bundle parses");
        assert_eq!(certs.len(), 2);
        assert!(client_config(&certs).is_ok());
    }

    #[test]
    fn empty_or_keyless_text_is_refused_with_a_clear_error() {
        assert_eq!(parse_ca_bundle(""), Err(TrustError::NoCertificate));
        assert_eq!(
            parse_ca_bundle("just some text"),
            Err(TrustError::NoCertificate)
        );
    }

    #[test]
    fn a_certificate_block_that_is_not_a_certificate_is_refused() {
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let err = parse_ca_bundle(junk).unwrap_err();
        assert!(
            matches!(err, TrustError::BadCertificate { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn broken_base64_inside_a_block_is_bad_pem() {
        let broken = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_ca_bundle(broken),
            Err(TrustError::BadPem(_))
        ));
    }
}
