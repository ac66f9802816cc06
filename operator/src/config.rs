//! The operator's command line. Every flag can also be set through the environment
//! variable named in its help.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use clap::Parser;

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Reconciles PodRestore objects and drives the podrestore node agents.
#[derive(Debug, Clone, Parser)]
#[command(name = "podrestore-operator", version, about)]
pub struct Args {
    /// Namespace the operator runs in; its Lease and certificate Secrets live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "podrestore-system")]
    pub namespace: String,

    /// Reconcile only PodRestores in this namespace (all namespaces when unset).
    #[arg(long, env = "PODRESTORE_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// This replica's identity in leader election (the pod name); a random one by default.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Name of the coordination.k8s.io Lease the replicas elect a leader with.
    #[arg(
        long,
        env = "PODRESTORE_LEASE_NAME",
        default_value = "podrestore-operator"
    )]
    pub lease_name: String,

    /// How long a leader's Lease stays valid without renewal, in seconds. The leader renews
    /// every third of it; a standby takes over after it expires.
    #[arg(long, env = "PODRESTORE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u32,

    /// Address of the HTTP listener for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PODRESTORE_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// Namespaces whose checkpoints a PodRestore in any namespace may restore (a PodRestore
    /// may always restore checkpoints taken in its own namespace). Comma-separated in the
    /// environment.
    #[arg(
        long = "allowed-source-namespaces",
        env = "PODRESTORE_ALLOWED_SOURCE_NAMESPACES",
        value_delimiter = ','
    )]
    pub allowed_source_namespaces: Vec<String>,

    /// Namespace of the agent DaemonSet's pods; the operator's namespace by default.
    #[arg(long, env = "PODRESTORE_AGENT_NAMESPACE")]
    pub agent_namespace: Option<String>,

    /// Label selector of the agent DaemonSet's pods.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_SELECTOR",
        default_value = "app.kubernetes.io/name=podrestore-agent"
    )]
    pub agent_selector: String,

    /// gRPC port of the agents.
    #[arg(long, env = "PODRESTORE_AGENT_PORT", default_value_t = 9443)]
    pub agent_port: u16,

    /// `NODE=HOST:PORT`: reach the agent of NODE at this address instead of looking up its
    /// pod (agents running outside the cluster network, development). Repeatable;
    /// comma-separated in the environment.
    #[arg(
        long = "agent-endpoint",
        env = "PODRESTORE_AGENT_ENDPOINTS",
        value_delimiter = ',',
        value_parser = parse_endpoint
    )]
    pub agent_endpoints: Vec<(String, String)>,

    /// Secret holding the podrestore CA (certificate and key).
    #[arg(long, env = "PODRESTORE_CA_SECRET", default_value = "podrestore-ca")]
    pub ca_secret: String,

    /// Secret the agent DaemonSet mounts: CA bundle and the agents' serving key pair.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_TLS_SECRET",
        default_value = "podrestore-agent-tls"
    )]
    pub agent_tls_secret: String,

    /// DNS name in the operator's client certificate; the agents accept only this name.
    #[arg(
        long,
        env = "PODRESTORE_OPERATOR_NAME",
        default_value = "podrestore-operator"
    )]
    pub operator_name: String,

    /// How often the certificates are checked for rotation, in seconds.
    #[arg(long, env = "PODRESTORE_CERT_CHECK_SECONDS", default_value_t = 60)]
    pub cert_check_seconds: u64,

    /// Log format.
    #[arg(
        long,
        env = "PODRESTORE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

fn parse_endpoint(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((node, addr)) if !node.is_empty() && addr.contains(':') => {
            Ok((node.to_owned(), addr.to_owned()))
        }
        _ => Err(format!("{value:?} is not NODE=HOST:PORT")),
    }
}

impl Args {
    /// Namespace of the agents' pods.
    pub fn agent_namespace(&self) -> &str {
        self.agent_namespace.as_deref().unwrap_or(&self.namespace)
    }

    /// The static agent addresses by node.
    pub fn endpoints(&self) -> BTreeMap<String, String> {
        self.agent_endpoints.iter().cloned().collect()
    }

    /// The Lease duration.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_duration_seconds.max(3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("node-a=127.0.0.1:9443"),
            Ok(("node-a".into(), "127.0.0.1:9443".into()))
        );
        assert!(parse_endpoint("node-a").is_err());
        assert!(parse_endpoint("=1.2.3.4:5").is_err());
        assert!(parse_endpoint("node-a=host").is_err());
    }

    #[test]
    fn flags_and_defaults() {
        let args = Args::try_parse_from([
            "podrestore-operator",
            "--allowed-source-namespaces",
            "prod,staging",
            "--agent-endpoint",
            "n1=10.0.0.1:9443",
        ])
        .expect("parses");
        assert_eq!(args.allowed_source_namespaces, vec!["prod", "staging"]);
        assert_eq!(args.agent_namespace(), "podrestore-system");
        assert_eq!(
            args.endpoints().get("n1").map(String::as_str),
            Some("10.0.0.1:9443")
        );
    }
}
