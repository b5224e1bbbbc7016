//! TLS for PostgreSQL connections: libpq's `sslmode` values on rustls with
//! the `ring` provider.
//!
//! | `sslmode`           | encrypted               | certificate checked                    |
//! |---------------------|-------------------------|----------------------------------------|
//! | `disable`           | no                      | —                                      |
//! | `prefer` (default)  | if the server offers it | no                                     |
//! | `require`           | yes, or no connection   | no (chain only if `sslrootcert` given) |
//! | `verify-ca`         | yes                     | chain against the roots                |
//! | `verify-full`       | yes                     | chain and host name                    |
//!
//! The roots are the PEM file named by `sslrootcert=PATH`, or the system's
//! trust store (also `sslrootcert=system`). These parameters are taken out
//! of the URL here; tokio-postgres sees the rest with `sslmode` reduced to
//! what it knows (`disable`, `prefer`, `require`).
//!
//! Must never let a `verify-*` mode connect without TLS or with a
//! certificate its roots do not vouch for.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::{ServerStoreError, ServerStoreResult};

/// How a connection is secured, as `sslmode` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> ServerStoreResult<Mode> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err(ServerStoreError::Config(
                    "sslmode=allow is not supported (it tries plain TCP first): use prefer, \
                     require, verify-ca or verify-full"
                        .into(),
                ))
            }
            other => {
                return Err(ServerStoreError::Config(format!(
                    "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or \
                     verify-full"
                )))
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried and whether it is
    /// required.
    fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// A PostgreSQL URL split into what tokio-postgres parses and the TLS
/// settings handled here.
pub(crate) struct PgTarget {
    /// The connection settings (TLS mode applied).
    pub(crate) config: tokio_postgres::Config,
    /// The TLS connector for every connection to it.
    pub(crate) tls: MakeRustls,
}

impl PgTarget {
    /// Parses `url` (`postgres://...?...&sslmode=...&sslrootcert=...`).
    pub(crate) fn parse(url: &str) -> ServerStoreResult<PgTarget> {
        let (rest, mode, root_cert) = take_tls_params(url)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| ServerStoreError::Config(format!("PostgreSQL URL: {e}")))?;
        let mode = mode.unwrap_or(Mode::Prefer);
        config.ssl_mode(mode.ssl_mode());
        let tls = MakeRustls::new(mode, root_cert.as_deref())?;
        Ok(PgTarget { config, tls })
    }
}

/// Removes `sslmode` and `sslrootcert` from the URL's query and parses them.
fn take_tls_params(url: &str) -> ServerStoreResult<(String, Option<Mode>, Option<String>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| ServerStoreError::Config(format!("{key} is not valid UTF-8")))
        };
        match key {
            "sslmode" => mode = Some(Mode::parse(&decoded()?)?),
            "sslrootcert" => root_cert = Some(decoded()?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root_cert))
}

/// The rustls client configuration for `mode` with the roots `root_cert`
/// names (a PEM file, `system`, or the system's when absent).
fn client_config(mode: Mode, root_cert: Option<&str>) -> ServerStoreResult<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerStoreError::Config(format!("TLS: {e}")))?;
    // libpq: `require` with a root certificate checks the chain like verify-ca.
    let check = match (mode, root_cert) {
        (Mode::VerifyFull, _) => Check::Full,
        (Mode::VerifyCa, _) | (Mode::Require, Some(_)) => Check::Chain,
        _ => Check::Nothing,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(EncryptOnly(provider)),
        Check::Chain | Check::Full => {
            let roots = Arc::new(load_roots(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ServerStoreError::Config(format!("TLS roots: {e}")))?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

/// The trust anchors: the certificates of a PEM file, or the system's.
fn load_roots(root_cert: Option<&str>) -> ServerStoreResult<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ServerStoreError::Config(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ServerStoreError::Config(format!(
                    "sslrootcert {path}: no usable certificate in the file"
                )));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "skipping part of the system's trust store");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ServerStoreError::Config(
                    "no system root certificates found: give sslrootcert=PATH".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// `prefer` and `require` without roots (libpq's meaning): the connection
/// is encrypted, the server's certificate is not checked. Handshake
/// signatures are still verified.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a root; the name is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS connector on rustls. Cheap to clone.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<ClientConfig>,
    mode: Mode,
}

impl fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustls")
            .field("mode", &self.mode)
            .finish()
    }
}

impl MakeRustls {
    fn new(mode: Mode, root_cert: Option<&str>) -> ServerStoreResult<MakeRustls> {
        Ok(MakeRustls {
            config: Arc::new(client_config(mode, root_cert)?),
            mode,
        })
    }

    /// The `sslmode` this connector was made for.
    #[cfg(test)]
    fn mode(&self) -> Mode {
        self.mode
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            domain: domain.to_owned(),
        })
    }
}

/// Connects one stream to one host.
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    domain: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // The name is checked only when TLS is really used (a Unix
            // socket "host" is a path).
            let name = ServerName::try_from(self.domain.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TLS server name {:?}: {e}", self.domain),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// An encrypted connection to PostgreSQL.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM-SHA-256 without channel binding (as libpq's default `prefer`).
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(mode, Some(Mode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = take_tls_params("postgres://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://u@h/db", None, None)
        );
        let (rest, ..) = take_tls_params("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
    }

    #[test]
    fn unknown_or_unsafe_modes_are_refused() {
        for bad in ["allow", "verify_full", "", "REQUIRE"] {
            let url = format!("postgres://u@h/db?sslmode={bad}");
            assert!(
                matches!(PgTarget::parse(&url), Err(ServerStoreError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn verify_modes_require_tls_and_a_readable_root_file() {
        let missing = PgTarget::parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
        );
        match missing {
            Err(ServerStoreError::Config(message)) => {
                assert!(message.contains("/nonexistent/root.pem"), "{message}")
            }
            other => panic!("expected a config error, got {:?}", other.map(|_| ())),
        }
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk_url = format!(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
            junk.display()
        );
        assert!(matches!(
            PgTarget::parse(&junk_url),
            Err(ServerStoreError::Config(_))
        ));
        let default = PgTarget::parse("postgres://u@h/db").unwrap();
        assert_eq!(default.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(default.tls.mode(), Mode::Prefer);
    }
}
