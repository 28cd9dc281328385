//! TLS to frps, over any [`Transport`].
//!
//! frpc verifies nothing by default (Go's `InsecureSkipVerify`), and frps, unless given cert files,
//! presents a fresh self-signed certificate with no names at every start. burrow therefore offers
//! three levels, chosen by configuration:
//!
//! * no CA, no pin: encrypted but unauthenticated, like frpc (the caller emits `tls_unverified`);
//! * `BURROW_TLS_PIN`: exactly the certificate whose DER bytes hash to the pin;
//! * `BURROW_TLS_CA`: the chain must lead to that CA and name the server.
//!
//! In every mode the handshake signature is checked against the presented certificate, so a pin
//! cannot be replayed by a server that lacks the key. SNI is sent only for host names, as Go does.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;

use super::{BoxStream, Transport, TransportError};

/// Why a TLS client could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file is unreadable or holds no certificate.
    #[error("cannot use CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The name is not a valid DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How the server certificate is checked.
#[derive(Debug, Clone, Default)]
pub struct Verification<'a> {
    /// A PEM file of trusted CA certificates.
    pub ca_file: Option<&'a Path>,
    /// SHA-256 of the expected certificate's DER bytes.
    pub pin: Option<[u8; 32]>,
}

#[derive(Debug)]
struct FrpVerifier {
    pin: Option<[u8; 32]>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FrpVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if &got != pin {
                return Err(rustls::Error::General(format!(
                    "the server certificate (sha256 {}) does not match BURROW_TLS_PIN",
                    hex::encode(got)
                )));
            }
        }
        if let Some(v) = &self.webpki {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds the rustls client configuration for frps.
pub fn client_config(v: &Verification<'_>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = match v.ca_file {
        None => None,
        Some(path) => {
            let bad = |reason: String| TlsSetupError::CaFile { path: path.display().to_string(), reason };
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
            for cert in certs {
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("it holds no PEM certificate".into()));
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Some(verifier)
        }
    };
    let verifier = FrpVerifier { pin: v.pin, webpki, provider: provider.clone() };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify and, for DNS names only, to send as SNI.
pub fn server_name(host: &str, configured: Option<&str>) -> Result<ServerName<'static>, TlsSetupError> {
    let name = configured.unwrap_or(host);
    ServerName::try_from(name.to_string()).map_err(|_| TlsSetupError::ServerName(name.to_string()))
}

/// How long a TLS handshake may take (a server that accepts TCP and then says nothing).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Wraps every stream of `inner` in TLS.
pub struct TlsTransport<T> {
    inner: T,
    connector: TlsConnector,
    name: ServerName<'static>,
    addr: String,
}

impl<T: Transport> TlsTransport<T> {
    /// TLS over `inner`, verifying as `config` says, for the server `name`.
    pub fn new(inner: T, config: Arc<rustls::ClientConfig>, name: ServerName<'static>, addr: String) -> Self {
        Self { inner, connector: TlsConnector::from(config), name, addr }
    }
}

impl<T: Transport> Transport for TlsTransport<T> {
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
        Box::pin(async move {
            let stream = self.inner.connect().await?;
            let handshake = self.connector.connect(self.name.clone(), stream);
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| TransportError::Tls {
                    addr: self.addr.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS answer within 10 s"),
                })?
                .map_err(|source| TransportError::Tls { addr: self.addr.clone(), source })?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}
