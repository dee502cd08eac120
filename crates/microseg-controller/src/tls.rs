//! Optional TLS (rustls, ring provider): the controller's server side (REST and gRPC on
//! one listener; ALPN `h2` and `http/1.1`; client certificates required and verified
//! against `--tls-client-ca` for mutual TLS) and the client side of [`crate::client`].

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// CA bundles of the usual distributions, tried in order when no CA file is given.
pub const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The first system CA bundle that exists.
pub fn system_ca_file() -> Option<&'static Path> {
    SYSTEM_CA_FILES.iter().map(Path::new).find(|p| p.is_file())
}

/// Why a TLS configuration could not be made; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no usable PEM private key: {source}", path.display())]
    NoKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: none of its {skipped} certificate(s) is a usable CA", path.display())]
    NoUsableCa { path: PathBuf, skipped: usize },
    #[error("{}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate and key do not make an identity (they do not match, say).
    #[error("{} and {}: {source}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("no CA bundle found on this system: give the controller's CA with --tls-ca")]
    NoSystemCa,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::NoKey {
        path: path.into(),
        source,
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    // A system bundle may hold a certificate webpki cannot use; it is skipped.
    let (added, skipped) = store.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(TlsError::NoUsableCa {
            path: path.into(),
            skipped,
        });
    }
    Ok(store)
}

/// The server's TLS configuration: its certificate chain and key; with `client_ca`,
/// every client must present a certificate issued by one of those CAs.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|source| TlsError::ClientCa {
                        path: ca.into(),
                        source,
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|source| identity_error(cert, key, source))?;
    // gRPC needs HTTP/2; the REST clients may speak HTTP/1.1.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client's TLS configuration: the CAs it trusts (`ca`, else the system bundle) and,
/// for mutual TLS, its certificate chain and key. ALPN `http/1.1`.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = match ca {
        Some(p) => p,
        None => system_ca_file().ok_or(TlsError::NoSystemCa)?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?);
    let mut cfg = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| identity_error(cert, key, source))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn identity_error(cert: &Path, key: &Path, source: rustls::Error) -> TlsError {
    TlsError::Identity {
        cert: cert.into(),
        key: key.into(),
        source,
    }
}

/// A listener for `axum::serve` that hands out TLS connections. TCP accepts and
/// handshakes run in a task of their own (each handshake in its own task, bounded in
/// time), so a slow or failing client never holds up the others. The task ends when the
/// listener is dropped.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task is gone (it only ends when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// The client certificate a connection presented (DER), if any: under mutual TLS an
/// agent may act only as the node its certificate names.
#[derive(Clone, Debug, Default)]
pub struct ClientCertificate(pub Option<Arc<Vec<u8>>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for ClientCertificate
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        ClientCertificate(
            session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| Arc::new(der.to_vec())),
        )
    }
}

impl ClientCertificate {
    /// Whether the certificate (when there is one) is issued to `node`: a DNS name in its
    /// subject alternative names, checked as TLS checks a server's name.
    pub fn allows_node(&self, node: &str) -> bool {
        let Some(der) = &self.0 else {
            return true;
        };
        let der = rustls::pki_types::CertificateDer::from(der.as_slice());
        let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
            return false;
        };
        let Ok(name) = rustls::pki_types::DnsName::try_from(node.to_string()) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&rustls::pki_types::ServerName::DnsName(name))
            .is_ok()
    }
}
