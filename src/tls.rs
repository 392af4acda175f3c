//! HTTPS: the certificate chain and key from PEM files, with HTTP/2 and HTTP/1.1 offered by ALPN so a
//! browser multiplexes its streams over one connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {0}: {1}")]
    Cert(PathBuf, String),
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("cannot read a private key from {0}: {1}")]
    Key(PathBuf, String),
    #[error("unusable certificate or key: {0}")]
    Rejected(#[from] rustls::Error),
}

pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |e: rustls::pki_types::pem::Error| TlsError::Cert(cert.to_path_buf(), e.to_string());
    let chain =
        CertificateDer::pem_file_iter(cert).map_err(cert_error)?.collect::<Result<Vec<_>, _>>().map_err(cert_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(key.to_path_buf(), e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_empty_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("pgsse-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (empty, missing) = (dir.join("empty.pem"), dir.join("missing.pem"));
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let err = server_config(&missing, &empty).unwrap_err();
        assert!(matches!(&err, TlsError::Cert(p, _) if p == &missing), "{err}");
        assert!(matches!(server_config(&empty, &empty), Err(TlsError::NoCert(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
