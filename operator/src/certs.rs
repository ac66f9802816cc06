//! Keeps the mutual-TLS material current: the CA Secret, the agents' Secret and the
//! operator's own client certificate.
//!
//! Design: one CA per installation, created by the operator on first start and kept in the
//! `podrestore-ca` Secret in the operator's namespace (`ca.crt`, `ca.key`, and `bundle.crt`,
//! the trust bundle: the current CA plus predecessors still valid). The agents share one
//! Secret, `podrestore-agent-tls` (`tls.crt`, `tls.key`, `ca.crt` = the bundle), whose
//! certificate names `podrestore-agent.<node>` for every node of the cluster. A DaemonSet
//! mounts the same Secret into every pod, so per-node Secrets would need each agent to read
//! its own from the API with rights to read all of them: no stricter in practice. What the
//! node name buys is that the operator never talks to the wrong node's agent (a stale pod
//! IP, a misrouted address): it dials with server name `podrestore-agent.<node>` and the
//! handshake fails unless the certificate names that node. The operator's client
//! certificate names `podrestore-operator` and is issued in memory by each leader; its key
//! never leaves the process.
//!
//! Rotation: leaves live 90 days and are reissued with 30 days left, or at once when the
//! node set or the CA changes; the CA lives 10 years and is replaced with 2 years left (the
//! old one stays in the bundle until it expires). The agent reloads its files when the
//! kubelet updates the mounted Secret, within about a minute.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Node, Secret},
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::pki::{self, KeyPairPem, PkiError};

/// Annotation on the agents' Secret naming the CA that issued its certificate.
pub const ISSUER_ANNOTATION: &str = "podrestore.io/issuer-fingerprint";
/// Label on the Secrets the operator manages.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podrestore-operator");

/// Errors of certificate management.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// An API call failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// Issuing or reading a certificate failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A Secret exists but does not hold what it should; the operator does not overwrite
    /// it (an administrator may have provided it).
    #[error(
        "secret {namespace}/{name} {problem}; fix it or delete it so the operator recreates it"
    )]
    BadSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// The material the operator dials agents with.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// PEM trust bundle for agent certificates.
    pub ca_bundle_pem: String,
    /// The operator's client certificate and key.
    pub identity: KeyPairPem,
}

#[derive(Default)]
struct State {
    client: Option<(Arc<ClientTls>, String, pki::CertFacts)>,
    agent_names: BTreeSet<String>,
}

/// Issues and rotates the certificates. Run [`CertManager::reconcile`] once before dialing
/// agents, then [`CertManager::run`] alongside the controller (leader only).
pub struct CertManager {
    client: Client,
    namespace: String,
    ca_secret: String,
    agent_secret: String,
    operator_name: String,
    extra_nodes: BTreeSet<String>,
    state: RwLock<State>,
    refresh: Notify,
}

/// Why the agents' Secret must be (re)written, if it must.
pub fn agent_secret_update_reason(
    existing: Option<&Secret>,
    ca_fingerprint: &str,
    bundle: &str,
    names: &BTreeSet<String>,
    now: Timestamp,
) -> Option<&'static str> {
    let Some(secret) = existing else {
        return Some("missing");
    };
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .unwrap_or_default()
    };
    let issuer = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ISSUER_ANNOTATION))
        .map(String::as_str);
    if text("tls.key").is_empty() {
        return Some("no key");
    }
    let Ok(facts) = pki::inspect(&text("tls.crt")) else {
        return Some("no readable certificate");
    };
    if issuer != Some(ca_fingerprint) {
        return Some("issued by another CA");
    }
    if text("ca.crt") != bundle {
        return Some("trust bundle changed");
    }
    if facts.dns_names != *names {
        return Some("node set changed");
    }
    if facts.needs_renewal(now, pki::LEAF_RENEW_BEFORE) {
        return Some("expires soon");
    }
    None
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

impl CertManager {
    /// A manager for Secrets in `namespace`. `extra_nodes` are nodes the agents'
    /// certificate must name besides the cluster's Node objects (agents reached through
    /// static endpoints).
    pub fn new(
        client: Client,
        namespace: String,
        ca_secret: String,
        agent_secret: String,
        operator_name: String,
        extra_nodes: BTreeSet<String>,
    ) -> Self {
        Self {
            client,
            namespace,
            ca_secret,
            agent_secret,
            operator_name,
            extra_nodes,
            state: RwLock::new(State::default()),
            refresh: Notify::new(),
        }
    }

    /// The operator's current client TLS material, once issued.
    pub fn client_tls(&self) -> Option<Arc<ClientTls>> {
        self.read(|s| s.client.as_ref().map(|(tls, _, _)| tls.clone()))
    }

    /// Whether the agents' certificate names `node`. When it does not, a reconcile is
    /// requested so that a new node is covered soon.
    pub fn covers(&self, node: &str) -> bool {
        let covered = self.read(|s| s.agent_names.contains(&pki::agent_server_name(node)));
        if !covered {
            self.refresh.notify_one();
        }
        covered
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        match self.state.read() {
            Ok(guard) => f(&guard),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut State)) {
        match self.state.write() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Reconciles every few `every`, or sooner when [`CertManager::covers`] asked, until
    /// `shutdown` resolves. Errors are logged and retried at the next round.
    pub async fn run(&self, every: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(err) = self.reconcile().await {
                warn!(error = %err, "certificate reconcile failed; retrying");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.refresh.notified() => {
                    // Coalesce bursts of requests from many reconciles.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Makes sure the CA, the agents' Secret and the client certificate are current.
    pub async fn reconcile(&self) -> Result<(), CertError> {
        let now = Timestamp::now();
        let (ca, bundle) = self.ensure_ca(now).await?;
        let ca_fingerprint = pki::fingerprint(&ca.cert_pem);
        let mut nodes: BTreeSet<String> = Api::<Node>::all(self.client.clone())
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        nodes.extend(self.extra_nodes.iter().cloned());
        let names = pki::agent_names(&nodes);
        self.ensure_agent_secret(&ca, &ca_fingerprint, &bundle, &names, &nodes, now)
            .await?;
        self.ensure_client(&ca, &ca_fingerprint, &bundle, now)?;
        self.write(|s| s.agent_names = names);
        Ok(())
    }

    fn bad(&self, name: &str, problem: impl Into<String>) -> CertError {
        CertError::BadSecret {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            problem: problem.into(),
        }
    }

    /// Returns the current CA and trust bundle, creating or rotating the CA as needed.
    async fn ensure_ca(&self, now: Timestamp) -> Result<(KeyPairPem, String), CertError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        // Two rounds at most: a create that loses a race reads the winner's CA.
        for _ in 0..2 {
            let Some(mut secret) = api.get_opt(&self.ca_secret).await? else {
                let ca = pki::new_ca(now)?;
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.ca_secret.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY.0.to_owned(),
                            MANAGED_BY.1.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some(BTreeMap::from([
                        ("ca.crt".to_owned(), bytes(&ca.cert_pem)),
                        ("ca.key".to_owned(), bytes(&ca.key_pem)),
                        ("bundle.crt".to_owned(), bytes(&ca.cert_pem)),
                    ])),
                    ..Secret::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        info!(secret = %self.ca_secret, "created the podrestore CA");
                        return Ok((ca.clone(), ca.cert_pem));
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(err) => return Err(err.into()),
                }
            };
            let data = secret.data.clone().unwrap_or_default();
            let text = |key: &str| -> Result<String, CertError> {
                data.get(key)
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| self.bad(&self.ca_secret, format!("has no {key}")))
            };
            let ca = KeyPairPem {
                cert_pem: text("ca.crt")?,
                key_pem: text("ca.key")?,
            };
            let bundle = text("bundle.crt").unwrap_or_else(|_| ca.cert_pem.clone());
            let facts = pki::inspect(&ca.cert_pem).map_err(|err| {
                self.bad(
                    &self.ca_secret,
                    format!("holds an unreadable ca.crt: {err}"),
                )
            })?;
            if !facts.needs_renewal(now, pki::CA_RENEW_BEFORE) {
                return Ok((ca, bundle));
            }
            let next = pki::new_ca(now)?;
            let next_bundle = pki::trust_bundle(&next.cert_pem, &bundle, now);
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            data.insert("ca.crt".into(), bytes(&next.cert_pem));
            data.insert("ca.key".into(), bytes(&next.key_pem));
            data.insert("bundle.crt".into(), bytes(&next_bundle));
            // `replace` carries the resourceVersion read above: a concurrent writer makes
            // it fail instead of being overwritten.
            api.replace(&self.ca_secret, &PostParams::default(), &secret)
                .await?;
            info!(secret = %self.ca_secret, "rotated the podrestore CA");
            return Ok((next, next_bundle));
        }
        Err(self.bad(&self.ca_secret, "keeps changing while being created"))
    }

    async fn ensure_agent_secret(
        &self,
        ca: &KeyPairPem,
        ca_fingerprint: &str,
        bundle: &str,
        names: &BTreeSet<String>,
        nodes: &BTreeSet<String>,
        now: Timestamp,
    ) -> Result<(), CertError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing = api.get_opt(&self.agent_secret).await?;
        let Some(reason) =
            agent_secret_update_reason(existing.as_ref(), ca_fingerprint, bundle, names, now)
        else {
            return Ok(());
        };
        let leaf = pki::issue_agent(ca, nodes, now)?;
        let data = BTreeMap::from([
            ("tls.crt".to_owned(), bytes(&leaf.cert_pem)),
            ("tls.key".to_owned(), bytes(&leaf.key_pem)),
            ("ca.crt".to_owned(), bytes(bundle)),
        ]);
        match existing {
            Some(mut secret) => {
                // Keep what others (the chart) put on the Secret; replace the data only.
                secret
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ISSUER_ANNOTATION.into(), ca_fingerprint.into());
                secret.data = Some(data);
                secret.string_data = None;
                api.replace(&self.agent_secret, &PostParams::default(), &secret)
                    .await?;
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.agent_secret.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY.0.to_owned(),
                            MANAGED_BY.1.to_owned(),
                        )])),
                        annotations: Some(BTreeMap::from([(
                            ISSUER_ANNOTATION.to_owned(),
                            ca_fingerprint.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data),
                    ..Secret::default()
                };
                api.create(&PostParams::default(), &secret).await?;
            }
        }
        info!(secret = %self.agent_secret, reason, nodes = nodes.len(), "issued the agents' certificate");
        Ok(())
    }

    fn ensure_client(
        &self,
        ca: &KeyPairPem,
        ca_fingerprint: &str,
        bundle: &str,
        now: Timestamp,
    ) -> Result<(), CertError> {
        let current = self.read(|s| {
            s.client
                .as_ref()
                .map(|(tls, fp, facts)| (tls.ca_bundle_pem.clone(), fp.clone(), facts.clone()))
        });
        let fresh = current.is_some_and(|(b, fp, facts)| {
            b == bundle && fp == ca_fingerprint && !facts.needs_renewal(now, pki::LEAF_RENEW_BEFORE)
        });
        if fresh {
            return Ok(());
        }
        let identity = pki::issue_operator(ca, &self.operator_name, now)?;
        let facts = pki::inspect(&identity.cert_pem)?;
        let tls = Arc::new(ClientTls {
            ca_bundle_pem: bundle.to_owned(),
            identity,
        });
        self.write(|s| s.client = Some((tls, ca_fingerprint.to_owned(), facts)));
        info!(name = %self.operator_name, "issued the operator's client certificate");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(leaf: &KeyPairPem, bundle: &str, issuer: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(
                    ISSUER_ANNOTATION.to_owned(),
                    issuer.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                ("tls.crt".to_owned(), bytes(&leaf.cert_pem)),
                ("tls.key".to_owned(), bytes(&leaf.key_pem)),
                ("ca.crt".to_owned(), bytes(bundle)),
            ])),
            ..Secret::default()
        }
    }

    #[test]
    fn agent_secret_update_reasons() -> Result<(), PkiError> {
        let now = Timestamp::from_second(1_800_000_000).expect("ts");
        let ca = pki::new_ca(now)?;
        let fp = pki::fingerprint(&ca.cert_pem);
        let nodes = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        let names = pki::agent_names(&nodes);
        let leaf = pki::issue_agent(&ca, &nodes, now)?;
        let good = secret(&leaf, &ca.cert_pem, &fp);

        let three = pki::agent_names(&BTreeSet::from([
            "a".to_owned(),
            "b".to_owned(),
            "c".to_owned(),
        ]));
        let later = now
            .checked_add(Duration::from_secs(61 * 24 * 3600))
            .expect("add");
        type Case<'a> = (
            &'a str,
            Option<&'a Secret>,
            &'a str,
            &'a BTreeSet<String>,
            Timestamp,
            Option<&'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("up to date", Some(&good), &ca.cert_pem, &names, now, None),
            ("missing", None, &ca.cert_pem, &names, now, Some("missing")),
            (
                "new node",
                Some(&good),
                &ca.cert_pem,
                &three,
                now,
                Some("node set changed"),
            ),
            (
                "bundle changed",
                Some(&good),
                "other",
                &names,
                now,
                Some("trust bundle changed"),
            ),
            (
                "expiring",
                Some(&good),
                &ca.cert_pem,
                &names,
                later,
                Some("expires soon"),
            ),
        ];
        for (case, existing, bundle, names, at, want) in cases {
            assert_eq!(
                agent_secret_update_reason(existing, &fp, bundle, names, at),
                want,
                "{case}"
            );
        }
        assert_eq!(
            agent_secret_update_reason(Some(&good), "another-ca", &ca.cert_pem, &names, now),
            Some("issued by another CA")
        );
        Ok(())
    }
}
