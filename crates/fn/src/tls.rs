//! TLS for the function server and its clients, on rustls (no OpenSSL).
//!
//! The server's certificate, key and (for mutual TLS) client CA are read from
//! PEM files at start and again on SIGHUP: a new connection gets the newest
//! configuration, connections already open keep theirs, and a reload that
//! fails (a half-written file, a key that does not match) keeps the old one.
//! ALPN offers HTTP/2 first, then HTTP/1.1.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The PEM files a server's TLS is made of.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> crate::Result<Vec<CertificateDer<'static>>> {
    let bad = |e: &dyn std::fmt::Display| crate::Error::Other(format!("{}: {e}", path.display()));
    let certs: Vec<_> =
        CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))?.collect::<Result<_, _>>().map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

fn roots(path: &Path) -> crate::Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| crate::Error::Other(format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

impl Files {
    /// A server configuration from the files as they are now.
    fn server_config(&self) -> crate::Result<Arc<rustls::ServerConfig>> {
        let chain = certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| crate::Error::Other(format!("{}: no PEM private key ({e})", self.key.display())))?;
        let provider = provider();
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| crate::Error::Other(format!("{} and {}: {e}", self.cert.display(), self.key.display())))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::Error::Other(format!("TLS: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider)
                    .build()
                    .map_err(|e| crate::Error::Other(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A server's TLS: the current configuration, replaced whole on reload.
pub struct Server {
    files: Files,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: Files) -> crate::Result<Server> {
        let current = RwLock::new(files.server_config()?);
        Ok(Server { files, current })
    }

    /// Reads the files again (SIGHUP). On an error the old configuration
    /// stays in use.
    pub fn reload(&self) -> crate::Result<()> {
        let fresh = self.files.server_config()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// For one new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A client configuration trusting `ca` (PEM) only, with a client
/// certificate and key for mutual TLS if given; ALPN offers `alpn`.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> crate::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Other(format!("TLS: {e}")))?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| crate::Error::Other(format!("{}: no PEM private key ({e})", key.display())))?;
            builder
                .with_client_auth_cert(certs(cert)?, key)
                .map_err(|e| crate::Error::Other(format!("{}: {e}", cert.display())))?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against.
pub fn server_name(host: &str) -> crate::Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| crate::Error::Other(format!("{host:?}: {e}")))
}
