//! TLS for the listener (`[tls]`): rustls with the ring provider, ALPN `h2` and `http/1.1`,
//! TLS 1.2 and 1.3 only, and a certificate that [`ServerTls::reload`] swaps while every open
//! connection carries on.
//!
//! What this module owns: reading and checking the PEM files ([`LoadedCert`], also used by
//! `cookiegate check`), the rustls server configuration, the handshake of one accepted
//! connection (bounded by `server.header_timeout`) and the swap of the certificate. What it
//! leaves to others: after the handshake the decrypted stream goes through the same
//! per-connection code as a plain one (`server.rs`: framing scanner, head timer, hyper's
//! auto builder, which also picks HTTP/2 from the client's preface, as ALPN `h2` promised it).
//!
//! Decisions:
//! - **Protocol versions**: TLS 1.3 and 1.2 (with rustls's default, forward-secret AEAD suites);
//!   nothing older exists in rustls. No 0-RTT data (rustls's default): early data can be
//!   replayed, and a proxy in front of an API cannot tell which requests are safe to replay.
//! - **Reload**: the configuration asks a resolver for the certificate at every handshake
//!   ([`ResolvesServerCert`]); [`ServerTls::reload`] reads and checks new files first and only
//!   then swaps the resolver's `Arc`. A connection keeps the keys its handshake agreed on, so
//!   none is dropped; a bad file keeps the old certificate.
//! - **Secrets**: the key file's bytes are wiped after parsing (rustls wipes the DER it
//!   loads), and no error or log line carries any part of them: PEM errors are reduced to
//!   which rule was broken (`pem_reason`), and a key rustls cannot use is named by its file
//!   only.
//! - **Plain HTTP on the TLS port** gets a `400` JSON answer in clear text, then the connection
//!   is closed: the first byte of a TLS connection is always a handshake record (`0x16`), and
//!   an HTTP request line never starts with it (`is_tls_record`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::error::ProxyError;

/// ALPN protocols offered, in preference order (RFC 7301; `h2` is RFC 9113 §3.2).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How long a connection refused over `server.max_connections` gets for its handshake and its
/// 503 answer together.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Which of the two `[tls]` files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    /// `tls.cert`: the certificate chain.
    Cert,
    /// `tls.key`: the private key.
    Key,
}

impl PemFile {
    /// The config key: `tls.cert` or `tls.key`.
    pub fn key_path(self) -> &'static str {
        match self {
            Self::Cert => "tls.cert",
            Self::Key => "tls.key",
        }
    }
}

/// Why a certificate or key could not be used. Every variant names its file; none carries a
/// byte of the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// Which file.
        file: PemFile,
        /// The path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {reason}", .path.display())]
    Pem {
        /// Which file.
        file: PemFile,
        /// The path read.
        path: PathBuf,
        /// Which PEM rule was broken (never the offending bytes).
        reason: &'static str,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .path.display())]
    NoCertificate {
        /// The path read.
        path: PathBuf,
    },
    /// The leaf certificate is not a readable X.509 certificate.
    #[error("the first certificate in {} cannot be parsed: {source}", .path.display())]
    BadCertificate {
        /// The path read.
        path: PathBuf,
        /// What rustls (webpki) found.
        #[source]
        source: rustls::Error,
    },
    /// The key file holds no private key block.
    #[error(
        "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        .path.display()
    )]
    NoKey {
        /// The path read.
        path: PathBuf,
    },
    /// The key parsed as PEM but is no RSA, ECDSA (P-256, P-384) or Ed25519 key rustls can sign
    /// with. rustls's own message is left out on purpose: it says nothing the variant does not.
    #[error(
        "{} holds a private key that cannot be used (RSA, ECDSA P-256/P-384 or Ed25519 needed)",
        .path.display()
    )]
    UnusableKey {
        /// The path read.
        path: PathBuf,
    },
    /// The key is not the one the leaf certificate was issued for.
    #[error("the key in {} does not belong to the certificate in {}", .key.display(), .cert.display())]
    Mismatch {
        /// The certificate's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
    },
}

impl TlsError {
    /// The file the problem is about, for `tls.cert: ...` / `tls.key: ...` config problems.
    pub fn file(&self) -> PemFile {
        match self {
            Self::Read { file, .. } | Self::Pem { file, .. } => *file,
            Self::NoCertificate { .. } | Self::BadCertificate { .. } => PemFile::Cert,
            Self::NoKey { .. } | Self::UnusableKey { .. } | Self::Mismatch { .. } => PemFile::Key,
        }
    }
}

/// A certificate chain and the private key of its leaf, read from PEM files and checked to
/// belong together. Cheap to clone; `Debug` shows the chain's length, never the key.
#[derive(Clone)]
pub struct LoadedCert(Arc<CertifiedKey>);

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("certificates", &self.0.cert.len())
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    /// Reads both files and checks that the key belongs to the leaf certificate. The
    /// certificate's problem is reported first when both files are bad; see
    /// [`LoadedCert::load_all`] for both at once.
    ///
    /// # Errors
    /// The first problem found, naming its file.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::load_all(cert, key).map_err(|mut problems| problems.remove(0))
    }

    /// As [`LoadedCert::load`], but reads both files whatever the first one holds, and returns
    /// every problem found (one per file at most; a mismatch only when both files are usable).
    ///
    /// # Errors
    /// One or two problems, never none.
    pub fn load_all(cert: &Path, key: &Path) -> Result<Self, Vec<TlsError>> {
        let chain = read_chain(cert);
        let signer = read_key(key);
        let (chain, signer) = match (chain, signer) {
            (Ok(chain), Ok(signer)) => (chain, signer),
            (chain, signer) => {
                return Err([chain.err(), signer.err()].into_iter().flatten().collect());
            }
        };
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            // `Unknown`: the signer cannot tell its public key; ring's always can.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(Self(Arc::new(certified)))
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(vec![TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }]),
            Err(source) => Err(vec![TlsError::BadCertificate {
                path: cert.to_owned(),
                source,
            }]),
        }
    }

    /// How many certificates the chain holds (the leaf and its intermediates).
    pub fn chain_len(&self) -> usize {
        self.0.cert.len()
    }
}

/// The ring provider (never aws-lc-rs, which compiles C and dominates clean builds).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain, leaf first.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        file: PemFile::Cert,
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            file: PemFile::Cert,
            path: path.to_owned(),
            reason: pem_reason(&e),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC: the first one in the file) and
/// makes a ring signer of it. The file's bytes are wiped once parsed.
fn read_key(path: &Path) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|source| TlsError::Read {
        file: PemFile::Key,
        path: path.to_owned(),
        source,
    })?);
    let der = PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => TlsError::Pem {
            file: PemFile::Key,
            path: path.to_owned(),
            reason: pem_reason(&other),
        },
    })?;
    // rustls wipes `der` once loaded.
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|_| TlsError::UnusableKey {
            path: path.to_owned(),
        })
}

/// What was wrong with a PEM file, without quoting it: pki-types' errors may hold a line of
/// the file or a base64 symbol of it, which for a key file is key material.
fn pem_reason(err: &pem::Error) -> &'static str {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a -----BEGIN block has no matching -----END line",
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block's base64 content is corrupt",
        pem::Error::Io(_) => "it could not be read to the end",
        pem::Error::NoItemsFound => "it holds no PEM block",
        _ => "it is malformed",
    }
}

/// The certificate handed to every handshake; [`ServerTls::reload`] swaps it.
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // Poisoning cannot leave a half-written `Arc`: take whatever is there.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, cert: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = cert;
    }
}

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// TLS termination for the listener: the rustls configuration and the current certificate.
///
/// This is the seam for reloading: [`ServerTls::reload`] (the binary calls it on `SIGHUP`) and
/// [`ServerTls::install`] (for a caller that has already loaded the files, as a whole-config
/// reload does through [`crate::config::TlsSettings`]). Both may be called from any thread
/// while connections are being served.
pub struct ServerTls {
    /// ALPN `h2` and `http/1.1`.
    acceptor: TlsAcceptor,
    /// ALPN `http/1.1` only, for connections refused over `server.max_connections`: their 503
    /// is written as HTTP/1.1, which a client that negotiated `h2` would not read.
    refusal: TlsAcceptor,
    current: Arc<CurrentCert>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Serves `cert` until the next reload.
    pub fn new(cert: &LoadedCert) -> Self {
        let current = Arc::new(CurrentCert(RwLock::new(cert.0.clone())));
        Self {
            acceptor: acceptor(current.clone(), &ALPN),
            refusal: acceptor(current.clone(), &ALPN[1..]),
            current,
        }
    }

    /// Reads and checks both files, then serves them from the next handshake on. On failure
    /// the current certificate stays. Open connections are never touched either way.
    ///
    /// Logs the outcome itself (`info` when swapped, `warn` with the file and the reason when
    /// not; never key bytes), so callers need not.
    ///
    /// # Errors
    /// The first problem found, naming its file; the old certificate is still served.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        match LoadedCert::load(cert, key) {
            Ok(loaded) => {
                self.install(&loaded);
                tracing::info!(
                    cert = %cert.display(),
                    key = %key.display(),
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(err) => {
                tracing::warn!(
                    file = err.file().key_path(),
                    error = %err,
                    "TLS certificate not reloaded; still serving the previous one"
                );
                Err(err)
            }
        }
    }

    /// Serves `cert` from the next handshake on.
    pub fn install(&self, cert: &LoadedCert) {
        self.current.set(cert.0.clone());
    }

    /// The handshake of one accepted connection, within `limit` (`server.header_timeout`)
    /// from the accept. `None` when it failed or timed out (logged at `debug`: a client's
    /// business, and no concern of any other connection), or when the client spoke plain
    /// HTTP, which is answered with a 400 first.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: IpAddr,
        limit: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let handshake = async {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 0 {
                return Ok(None);
            }
            if !is_tls_record(first[0]) {
                let answer = ProxyError::BadRequest("plain HTTP on the TLS port").to_http1_bytes();
                super::close_with(stream, &answer).await;
                return Err(std::io::Error::other(
                    "plain HTTP on the TLS port (answered 400)",
                ));
            }
            self.acceptor.accept(stream).await.map(Some)
        };
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(tls)) => tls,
            // rustls's errors describe the protocol (an alert, a bad record), never key bytes.
            Ok(Err(err)) => {
                tracing::debug!(client_ip = %peer, error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(client_ip = %peer, "TLS handshake not done within header_timeout");
                None
            }
        }
    }

    /// Answers a connection over `server.max_connections` with the 503 over TLS (ALPN
    /// `http/1.1`), within a second, then closes it.
    pub(crate) async fn refuse(self: Arc<Self>, stream: TcpStream, answer: Vec<u8>) {
        let refuse = async {
            if let Ok(tls) = self.refusal.accept(stream).await {
                super::close_with(tls, &answer).await;
            }
        };
        let _ = tokio::time::timeout(REFUSAL_TIME, refuse).await;
    }
}

/// TLS 1.3 and 1.2 with the ring provider's default suites, no client certificates, the
/// certificate `current` holds at each handshake, and these ALPN protocols.
#[expect(
    clippy::expect_used,
    reason = "an invariant of the build: the ring provider supports TLS 1.2 and 1.3"
)]
fn acceptor(current: Arc<CurrentCert>, alpn: &[&[u8]]) -> TlsAcceptor {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(current);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

/// Whether a connection's first byte can start a TLS connection: a handshake record (RFC 8446
/// §5.1, content type 22), which no HTTP method starts with.
pub(crate) fn is_tls_record(first: u8) -> bool {
    first == 0x16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn only_a_handshake_record_starts_a_tls_connection() {
        assert!(is_tls_record(0x16));
        for plain in [
            b'G', b'P', b'H', b'D', b'O', b'C', b'T', 0x80, 0x15, 0x17, 0,
        ] {
            assert!(!is_tls_record(plain), "{plain:#x}");
        }
    }

    #[test]
    fn a_matching_pair_loads_and_its_debug_shows_no_key() {
        let loaded =
            LoadedCert::load(&fixture("localhost.pem"), &fixture("localhost.key")).unwrap();
        assert_eq!(loaded.chain_len(), 1);
        assert_eq!(format!("{loaded:?}"), "LoadedCert { certificates: 1, .. }");
        // RSA (PKCS#8) as well as EC.
        LoadedCert::load(&fixture("reload.pem"), &fixture("reload.key")).unwrap();
    }

    #[test]
    fn problems_name_their_file_and_never_quote_the_key() {
        let dir = std::env::temp_dir().join(format!("cookiegate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = fixture("localhost.pem");
        let key = fixture("localhost.key");
        let key_text = std::fs::read_to_string(&key).unwrap();
        let body_line = key_text.lines().nth(1).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        // A corrupt base64 body: pki-types would quote the symbol; we do not.
        let corrupt = write(
            "corrupt.key",
            &key_text.replacen(body_line, &format!("{body_line}!!"), 1),
        );
        let truncated = write(
            "truncated.key",
            key_text
                .lines()
                .take(2)
                .collect::<Vec<_>>()
                .join("\n")
                .as_str(),
        );
        let empty = write("empty.key", "");
        let not_a_key = write("cert-as-key.key", &std::fs::read_to_string(&cert).unwrap());
        let other_key = fixture("reload.key");
        let cases: [(&Path, &Path, PemFile, &str); 7] = [
            (&dir.join("missing.pem"), &key, PemFile::Cert, "cannot read"),
            (&key, &key, PemFile::Cert, "holds no PEM certificate"),
            (&cert, &corrupt, PemFile::Key, "base64 content is corrupt"),
            (&cert, &truncated, PemFile::Key, "no matching -----END"),
            (&cert, &empty, PemFile::Key, "holds no PEM private key"),
            (&cert, &not_a_key, PemFile::Key, "holds no PEM private key"),
            (
                &cert,
                &other_key,
                PemFile::Key,
                "does not belong to the certificate",
            ),
        ];
        for (cert, key, file, want) in cases {
            let err = LoadedCert::load(cert, key).unwrap_err();
            let text = format!("{err} {err:?}");
            assert_eq!(err.file(), file, "{text}");
            assert!(text.contains(want), "{text}");
            for line in key_text.lines().skip(1).filter(|l| !l.starts_with("-----")) {
                for piece in line.as_bytes().chunks(8) {
                    let piece = std::str::from_utf8(piece).unwrap();
                    assert!(!text.contains(piece), "{piece:?} of the key in {text}");
                }
            }
        }
        // Both files bad: both problems, the certificate's first.
        let both = LoadedCert::load_all(&dir.join("missing.pem"), &empty).unwrap_err();
        let files: Vec<_> = both.iter().map(TlsError::file).collect();
        assert_eq!(files, [PemFile::Cert, PemFile::Key]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
