//! TLS for the agent's server: TLS 1.3 only, a client certificate is mandatory, it must
//! chain to the podrestore CA and name the operator.
//!
//! The operator issues the files (CA bundle, serving key pair naming
//! `podrestore-agent.<node>`) into a Secret the agent's DaemonSet mounts, and rotates them
//! before they expire; [`ReloadingServerConfig`] picks up new files without a restart.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        ParsedCertificate, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use sha2::{Digest, Sha256};

/// The DNS name the agent on `node` presents, and the operator expects. The operator
/// builds the same name when it issues the certificate and when it dials.
pub fn agent_server_name(node: &str) -> String {
    format!("podrestore-agent.{node}")
}

/// The name the operator's client certificate carries by default.
pub const DEFAULT_OPERATOR_NAME: &str = "podrestore-operator";

/// Errors while loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of the expected kind.
    #[error("{what} {path}: {message}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A name is not a valid DNS name.
    #[error("{0:?} is not a valid DNS name")]
    BadName(String),
    /// rustls refused the material.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. an empty CA bundle).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Where the server's TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain of the agent, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the agent.
    pub key: PathBuf,
    /// PEM bundle of the CA certificates client certificates must chain to.
    pub client_ca: PathBuf,
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(String) -> TlsError {
    let path = path.to_path_buf();
    move |message| TlsError::File {
        what,
        path,
        message,
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| file_error(what, path)(err.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(what, path)("no certificate in file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|err| file_error("private key", path)(err.to_string()))
}

pub(crate) fn dns_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::BadName(name.to_owned()))
}

/// Checks that the serving certificate in `files` names the agent of `node`, so that a
/// misissued certificate shows at startup rather than as refused handshakes.
pub fn check_serving_name(files: &TlsFiles, node: &str) -> Result<(), TlsError> {
    let certs = read_certs("certificate", &files.cert)?;
    let name = dns_name(&agent_server_name(node))?;
    let leaf = certs
        .first()
        .ok_or_else(|| file_error("certificate", &files.cert)("no certificate in file".into()))?;
    let parsed = ParsedCertificate::try_from(leaf)?;
    rustls::client::verify_server_name(&parsed, &name)?;
    Ok(())
}

/// Accepts a client certificate only if it chains to the CA bundle (WebPKI rules, client
/// auth usage) and carries one of the allowed DNS names.
pub struct NamedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

impl fmt::Debug for NamedClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedClientVerifier")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl NamedClientVerifier {
    /// A verifier trusting `roots` for clients named one of `names`.
    pub fn new(roots: RootCertStore, names: &[String]) -> Result<Self, TlsError> {
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        let names = names
            .iter()
            .map(|n| dns_name(n))
            .collect::<Result<_, _>>()?;
        Ok(Self { inner, names })
    }
}

impl ClientCertVerifier for NamedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if self
            .names
            .iter()
            .any(|name| rustls::client::verify_server_name(&parsed, name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Builds the server configuration from `files`, accepting clients named one of
/// `client_names`.
pub fn server_config(
    files: &TlsFiles,
    client_names: &[String],
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("certificate", &files.cert)?;
    let key = read_key(&files.key)?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs("client CA bundle", &files.client_ca)? {
        roots.add(ca)?;
    }
    let verifier = NamedClientVerifier::new(roots, client_names)?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration that follows its files: [`ReloadingServerConfig::reload`]
/// rebuilds it when their content changed (the kubelet updates mounted Secrets in place).
pub struct ReloadingServerConfig {
    files: TlsFiles,
    client_names: Vec<String>,
    current: RwLock<(Arc<ServerConfig>, [u8; 32])>,
}

impl fmt::Debug for ReloadingServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingServerConfig")
            .field("files", &self.files)
            .field("client_names", &self.client_names)
            .finish_non_exhaustive()
    }
}

impl ReloadingServerConfig {
    /// Loads the files once; fails if they do not make a valid configuration.
    pub fn load(files: TlsFiles, client_names: Vec<String>) -> Result<Self, TlsError> {
        let digest = Self::digest(&files)?;
        let config = server_config(&files, &client_names)?;
        Ok(Self {
            files,
            client_names,
            current: RwLock::new((config, digest)),
        })
    }

    fn digest(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
        let mut hash = Sha256::new();
        for (what, path) in [
            ("certificate", &files.cert),
            ("private key", &files.key),
            ("client CA bundle", &files.client_ca),
        ] {
            let bytes =
                std::fs::read(path).map_err(|err| file_error(what, path)(err.to_string()))?;
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        Ok(hash.finalize().into())
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Rebuilds the configuration if the files changed; returns whether it did. On error
    /// the previous configuration stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let digest = Self::digest(&self.files)?;
        let unchanged = match self.current.read() {
            Ok(guard) => guard.1 == digest,
            Err(poisoned) => poisoned.into_inner().1 == digest,
        };
        if unchanged {
            return Ok(false);
        }
        let config = server_config(&self.files, &self.client_names)?;
        match self.current.write() {
            Ok(mut guard) => *guard = (config, digest),
            Err(poisoned) => *poisoned.into_inner() = (config, digest),
        }
        Ok(true)
    }
}
