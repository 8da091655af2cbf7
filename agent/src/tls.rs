//! TLS to the collector: rustls with the `ring` provider, chosen explicitly (reqwest 0.13's
//! default would be aws-lc-rs; the `rustls-no-provider` feature leaves the choice to us).
//!
//! Which certificates are trusted:
//! - `forward.ca_file` set: only the CA certificates in that PEM file (for a private CA or
//!   a self-signed collector certificate). The system's roots are not consulted.
//! - otherwise: the operating system's trust store, through `rustls-platform-verifier`
//!   (on Linux the usual CA bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
//!
//! Plain `http://` collectors do not use any of this.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("reading CA certificates from {path}: {message}")]
    CaFile {
        /// The configured `forward.ca_file`.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration (e.g. a certificate it cannot parse).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider the agent uses for every TLS connection.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client TLS configuration for the collector connection.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match ca_file {
        Some(path) => {
            let roots = load_roots(path)?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    // The agent's HTTP client speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate of a PEM file, as trust anchors.
fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let err = |message: String| TlsError::CaFile {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE section found".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert)?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_build_with_ring() {
        let config = client_config(None).expect("platform verifier");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope.pem");
        let e = client_config(Some(&missing)).expect_err("missing file");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client_config(Some(&empty)).expect_err("empty file");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
