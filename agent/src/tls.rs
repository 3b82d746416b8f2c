//! HTTPS for the API (`[api] tls_listen`, `tls_cert`, `tls_key`, `tls_client_ca`), on
//! rustls: the conventions of the Prometheus exporters' web config. The certificate chain
//! and key are PEM files; with `tls_client_ca`, a client must present a certificate signed
//! by one of its CAs (`RequireAndVerifyClientCert`). The files are read at start and at
//! every reload (SIGHUP): a renewed certificate is served without a restart.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::http_server::ApiConfig;

/// The TLS configuration `api` asks for; None when it asks for none.
pub fn load(api: &ApiConfig) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key)) = (&api.tls_cert, &api.tls_key) else {
        return Ok(None);
    };
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "api.tls_key {}: {e}; expected a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &api.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("api.tls_client_ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("api.tls_client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "api.tls_cert {} and api.tls_key do not make a usable pair: {e}",
            cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}; expected PEM certificates", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it; expected PEM (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}
