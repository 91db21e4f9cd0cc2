//! HTTPS on ingest's own listener (`tls_cert`, `tls_key`), with rustls:
//! for deployments without a proxy in front, and for clients that only
//! build `https://` URLs (the official SDKs do).
//!
//! HTTP/1.1 only, as on the plain listener (ALPN says so). The files are
//! read once, at start; a renewed certificate needs a restart, which a
//! rolling restart of ingest gives without dropping work.

use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The acceptor `config` asks for: `None` without `tls_cert`.
pub fn acceptor(config: &dispatch_infra::Config) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls_cert: {cert}"))?;
    anyhow::ensure!(!chain.is_empty(), "tls_cert: {cert} holds no certificate");
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("tls_key: {key}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("tls_cert and tls_key do not make a usable pair")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
