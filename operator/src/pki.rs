//! The podrestore certificate authority: pure functions that issue and examine
//! certificates. Where they are stored and when they rotate is [`crate::certs`]'s job.
//!
//! Names: the agent on node N presents `podrestore-agent.N` (serverAuth); the operator
//! presents its configured name, `podrestore-operator` by default (clientAuth). Keys are
//! ECDSA P-256.

use std::{collections::BTreeSet, time::Duration};

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// How long a CA certificate is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Leaves are replaced once less than this is left.
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The CA is replaced once less than this is left (its successor then overlaps it in the
/// trust bundle until it expires).
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Certificates start this long before their issue time, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The DNS name the agent on `node` presents, and the operator expects when it dials it.
pub fn agent_server_name(node: &str) -> String {
    format!("podrestore-agent.{node}")
}

/// Errors of certificate work.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or the input.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A time outside what certificates can carry.
    #[error("certificate time {0} out of range")]
    Time(Timestamp),
    /// A certificate that does not parse.
    #[error("cannot read certificate: {0}")]
    Parse(String),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPairPem {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for KeyPairPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("KeyPairPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What the rotation logic needs to know about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// DNS names in its subject alternative names.
    pub dns_names: BTreeSet<String>,
}

impl CertFacts {
    /// Whether the certificate should be replaced at `now`: expired, not yet valid, or
    /// within `renew_before` of its end.
    pub fn needs_renewal(&self, now: Timestamp, renew_before: Duration) -> bool {
        let renew_at = self
            .not_after
            .checked_sub(renew_before)
            .unwrap_or(Timestamp::MIN);
        now < self.not_before || now >= renew_at
    }

    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

fn to_time(ts: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(ts.as_second()).map_err(|_| PkiError::Time(ts))
}

fn window(
    params: &mut CertificateParams,
    now: Timestamp,
    lifetime: Duration,
) -> Result<(), PkiError> {
    let start = now.checked_sub(BACKDATE).map_err(|_| PkiError::Time(now))?;
    let end = now.checked_add(lifetime).map_err(|_| PkiError::Time(now))?;
    params.not_before = to_time(start)?;
    params.not_after = to_time(end)?;
    Ok(())
}

/// Creates a new self-signed CA valid from `now` for [`CA_LIFETIME`].
pub fn new_ca(now: Timestamp) -> Result<KeyPairPem, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("podrestore CA {}", now.as_second()),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "podrestore");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    window(&mut params, now, CA_LIFETIME)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(KeyPairPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issue(
    ca: &KeyPairPem,
    common_name: &str,
    names: &BTreeSet<String>,
    usages: &[ExtendedKeyUsagePurpose],
    now: Timestamp,
) -> Result<KeyPairPem, PkiError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = names
        .iter()
        .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    window(&mut params, now, LEAF_LIFETIME)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyPairPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues the agents' serving certificate, naming `podrestore-agent.<node>` for every node
/// in `nodes`. It also carries client-auth usage: a target node's agent presents it to the
/// source node's agent when it pulls an archive.
pub fn issue_agent(
    ca: &KeyPairPem,
    nodes: &BTreeSet<String>,
    now: Timestamp,
) -> Result<KeyPairPem, PkiError> {
    let names = agent_names(nodes);
    issue(
        ca,
        "podrestore-agent",
        &names,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        now,
    )
}

/// The DNS names the agents' certificate must carry for `nodes`.
pub fn agent_names(nodes: &BTreeSet<String>) -> BTreeSet<String> {
    nodes.iter().map(|n| agent_server_name(n)).collect()
}

/// Issues the operator's client certificate for `name`.
pub fn issue_operator(ca: &KeyPairPem, name: &str, now: Timestamp) -> Result<KeyPairPem, PkiError> {
    let names = BTreeSet::from([name.to_owned()]);
    issue(
        ca,
        name,
        &names,
        &[ExtendedKeyUsagePurpose::ClientAuth],
        now,
    )
}

/// Reads validity and DNS names of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<CertFacts, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| PkiError::Parse(err.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|err| PkiError::Parse(err.to_string()))?;
    let validity = cert.validity();
    let time = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp())
            .map_err(|_| PkiError::Parse("validity out of range".into()))
    };
    let dns_names = cert
        .subject_alternative_name()
        .map_err(|err| PkiError::Parse(err.to_string()))?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertFacts {
        not_before: time(validity.not_before)?,
        not_after: time(validity.not_after)?,
        dns_names,
    })
}

/// Lower-case hex SHA-256 of a PEM certificate's text; identifies which CA issued a leaf
/// (kept in an annotation of the Secret the leaf is stored in).
pub fn fingerprint(pem: &str) -> String {
    hex::encode(Sha256::digest(pem.trim().as_bytes()))
}

/// Splits a PEM bundle into its certificates (each with its BEGIN/END lines).
pub fn split_bundle(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .filter(|part| part.contains("-----BEGIN CERTIFICATE-----"))
        .map(|part| format!("{}\n", part.trim()))
        .collect()
}

/// The trust bundle after a CA rotation: the new CA, then the previous CAs that are still
/// valid at `now`, so that certificates they issued keep working until replaced.
pub fn trust_bundle(current_ca_pem: &str, previous_bundle: &str, now: Timestamp) -> String {
    let current = format!("{}\n", current_ca_pem.trim());
    let mut out = current.clone();
    for cert in split_bundle(previous_bundle) {
        let keep = cert != current && inspect(&cert).is_ok_and(|facts| facts.valid_at(now));
        if keep {
            out.push_str(&cert);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("timestamp")
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn agent_certificates_name_every_node() -> Result<(), PkiError> {
        let ca = new_ca(at(NOW))?;
        let nodes = BTreeSet::from(["node-a".to_owned(), "node-b.example".to_owned()]);
        let agent = issue_agent(&ca, &nodes, at(NOW))?;
        let facts = inspect(&agent.cert_pem)?;
        assert_eq!(
            facts.dns_names,
            BTreeSet::from([
                "podrestore-agent.node-a".to_owned(),
                "podrestore-agent.node-b.example".to_owned()
            ])
        );
        assert_eq!(
            facts.not_after,
            at(NOW).checked_add(LEAF_LIFETIME).expect("add")
        );
        assert!(facts.not_before < at(NOW));
        let operator = inspect(&issue_operator(&ca, "podrestore-operator", at(NOW))?.cert_pem)?;
        assert_eq!(
            operator.dns_names,
            BTreeSet::from(["podrestore-operator".to_owned()])
        );
        Ok(())
    }

    #[test]
    fn renewal_windows() {
        let day = 24 * 3600;
        let facts = CertFacts {
            not_before: at(NOW),
            not_after: at(NOW + 90 * day),
            dns_names: BTreeSet::new(),
        };
        let cases = [
            (NOW - 1, true, "not yet valid"),
            (NOW, false, "fresh"),
            (NOW + 59 * day, false, "31 days left"),
            (NOW + 60 * day, true, "30 days left"),
            (NOW + 91 * day, true, "expired"),
        ];
        for (now, renew, case) in cases {
            assert_eq!(
                facts.needs_renewal(at(now), LEAF_RENEW_BEFORE),
                renew,
                "{case}"
            );
        }
    }

    #[test]
    fn trust_bundle_keeps_valid_predecessors_only() -> Result<(), PkiError> {
        let old = new_ca(at(NOW))?;
        let new = new_ca(at(NOW + 10))?;
        let bundle = trust_bundle(&new.cert_pem, &old.cert_pem, at(NOW + 20));
        assert_eq!(split_bundle(&bundle).len(), 2);
        assert!(split_bundle(&bundle)[0].contains(new.cert_pem.trim()));
        // Rebuilding from a bundle that already holds the current CA does not duplicate it.
        assert_eq!(
            split_bundle(&trust_bundle(&new.cert_pem, &bundle, at(NOW + 20))).len(),
            2
        );
        // Once the old CA expired it drops out.
        let later = at(NOW).checked_add(CA_LIFETIME).expect("add");
        assert_eq!(
            split_bundle(&trust_bundle(&new.cert_pem, &bundle, later)).len(),
            1
        );
        Ok(())
    }

    #[test]
    fn issued_certificates_chain_to_the_ca() -> Result<(), Box<dyn std::error::Error>> {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
        let now = Timestamp::now();
        let ca = new_ca(now)?;
        let nodes = BTreeSet::from(["node-a".to_owned()]);
        let agent = issue_agent(&ca, &nodes, now)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())?)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        let leaf = CertificateDer::from_pem_slice(agent.cert_pem.as_bytes())?;
        let ok = verifier.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from("podrestore-agent.node-a")?,
            &[],
            UnixTime::now(),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let wrong = verifier.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from("podrestore-agent.node-b")?,
            &[],
            UnixTime::now(),
        );
        assert!(wrong.is_err());
        // Peer agents present the same certificate as clients when they pull an archive.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())?)?;
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        let as_client = clients.verify_client_cert(&leaf, &[], UnixTime::now());
        assert!(as_client.is_ok(), "{as_client:?}");
        Ok(())
    }
}
