//! `podrestore-agent serve`: the gRPC service the operator calls, over mutual TLS, plus a
//! plain HTTP endpoint for probes and metrics.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::info;

use podrestore_agent::engine::{EngineConfig, NodeEngine};
use podrestore_agent::runtime::{self as cri_runtime, RuntimeConfig};
use podrestore_agent::service::{
    AgentService, RestoreEngine, ServiceConfig,
    metrics::Metrics,
    server::{self, ListenerOptions},
    tls::{self, ReloadingServerConfig, TlsFiles},
};

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `podrestore-agent serve`. Every flag can also be set through the
/// environment variable named in its help.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the node this agent serves; the DaemonSet sets it from `spec.nodeName`.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// Address of the gRPC (mutual TLS) listener.
    #[arg(long, env = "PODRESTORE_AGENT_LISTEN", default_value = "0.0.0.0:9443")]
    listen: SocketAddr,

    /// Address of the plain HTTP listener for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_PROBE_LISTEN",
        default_value = "0.0.0.0:9444"
    )]
    probe_listen: SocketAddr,

    /// PEM certificate chain the agent presents; it must name `podrestore-agent.<node>`.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_TLS_CERT",
        default_value = "/etc/podrestore/tls/tls.crt"
    )]
    tls_cert: PathBuf,

    /// PEM private key of that certificate.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_TLS_KEY",
        default_value = "/etc/podrestore/tls/tls.key"
    )]
    tls_key: PathBuf,

    /// PEM bundle of the podrestore CA; client certificates must chain to it.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_CLIENT_CA",
        default_value = "/etc/podrestore/tls/ca.crt"
    )]
    client_ca: PathBuf,

    /// DNS name(s) a client certificate must carry (comma-separated in the environment).
    #[arg(
        long = "operator-name",
        env = "PODRESTORE_OPERATOR_NAMES",
        value_delimiter = ',',
        default_value = tls::DEFAULT_OPERATOR_NAME
    )]
    operator_names: Vec<String>,

    /// Directory for the restore records and work directories.
    #[arg(
        long,
        env = "PODRESTORE_AGENT_STATE_DIR",
        default_value = "/var/lib/podrestore"
    )]
    state_dir: PathBuf,

    /// Directory archives may be restored from; repeat the flag (or separate with commas in
    /// the environment) for several.
    #[arg(
        long = "checkpoint-dir",
        env = "PODRESTORE_CHECKPOINT_DIRS",
        value_delimiter = ',',
        default_value = "/var/lib/kubelet/checkpoints"
    )]
    checkpoint_dirs: Vec<PathBuf>,

    /// How often to check the TLS files for a rotated certificate, in seconds.
    #[arg(long, env = "PODRESTORE_TLS_RELOAD_SECONDS", default_value_t = 30)]
    tls_reload_seconds: u64,

    /// How long to wait at shutdown for running restores to record their results, in
    /// seconds; keep it below the pod's termination grace period.
    #[arg(long, env = "PODRESTORE_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    shutdown_grace_seconds: u64,

    /// The CRIU binary restores run with (a bare name is looked up on PATH).
    #[arg(long, env = "PODRESTORE_CRIU", default_value = "criu")]
    criu: PathBuf,

    /// The container runtime's CRI endpoint (`unix:///path` or a socket path), where
    /// the agent finds target containers.
    #[arg(
        long,
        env = "PODRESTORE_RUNTIME_ENDPOINT",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    runtime_endpoint: String,

    /// Log format.
    #[arg(
        long,
        env = "PODRESTORE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// The engine that performs restores on this node: the container runtime (CRI),
/// the archive and CRIU, with this binary as the restore shim.
fn engine(args: &Args) -> anyhow::Result<Arc<dyn RestoreEngine>> {
    let socket = cri_runtime::socket_path(&args.runtime_endpoint)?;
    let shim_binary = std::env::current_exe().context("find the agent's own binary")?;
    Ok(Arc::new(NodeEngine::new(EngineConfig {
        criu: args.criu.clone(),
        shim_binary,
        runtime: RuntimeConfig {
            socket,
            ..RuntimeConfig::default()
        },
        ..EngineConfig::default()
    })))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Ignore the error of a second initialisation (tests, embedding).
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs `podrestore-agent serve` until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let engine = engine(&args)?;
    let files = TlsFiles {
        cert: args.tls_cert,
        key: args.tls_key,
        client_ca: args.client_ca,
    };
    if let Err(err) = tls::check_serving_name(&files, &args.node_name) {
        // Not fatal: the operator may not have reissued the certificate for a new node
        // yet; the reload picks up the new one.
        tracing::warn!(
            error = %err,
            expected = %tls::agent_server_name(&args.node_name),
            "the serving certificate does not name this node; the operator will refuse it"
        );
    }
    // Peer agents present the agents' certificate, which names every node's agent and so
    // this one's too; they may only call FetchArchive (the service checks).
    let mut client_names = args.operator_names.clone();
    client_names.push(tls::agent_server_name(&args.node_name));
    let peer_files = files.clone();
    let tls = Arc::new(
        ReloadingServerConfig::load(files, client_names)
            .context("load the TLS certificate, key and client CA")?,
    );

    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let service = AgentService::start(
        engine,
        ServiceConfig {
            node_name: args.node_name.clone(),
            state_dir: args.state_dir,
            checkpoint_dirs: args.checkpoint_dirs,
        },
        metrics,
    )
    .await
    .context("start the agent service")?;
    service.set_peer_tls(peer_files);

    let grpc_listener = server::bind(args.listen).await?;
    let probe_listener = server::bind(args.probe_listen).await?;
    info!(
        node = %args.node_name,
        grpc = %args.listen,
        probes = %args.probe_listen,
        operator_names = ?args.operator_names,
        "podrestore agent serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grpc = tokio::spawn(server::serve_grpc(
        grpc_listener,
        tls,
        service.clone(),
        ListenerOptions {
            tls_reload_interval: Duration::from_secs(args.tls_reload_seconds.max(1)),
            ..ListenerOptions::default()
        },
        stopped(stop_rx.clone()),
    ));
    let probes = tokio::spawn(server::serve_probes(
        probe_listener,
        Arc::new(registry),
        stopped(stop_rx),
    ));

    shutdown_signal().await?;
    info!("shutting down: waiting for running restores, then open calls");
    let left = service
        .wait_idle(Duration::from_secs(args.shutdown_grace_seconds))
        .await;
    if left > 0 {
        tracing::warn!(
            running = left,
            "restores still running at shutdown; the next agent records them as interrupted"
        );
    }
    let _ = stop_tx.send(true);
    grpc.await.context("grpc server task")??;
    probes.await.context("probe server task")??;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
