//! `podrestore-operator`: elects a leader among the replicas; the leader keeps the
//! certificates current and runs the PodRestore controller. Every replica serves
//! `/metrics`, `/healthz` and `/readyz`.

use std::{
    collections::BTreeSet,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use podrestore_operator::{
    agent::GrpcAgents,
    certs::CertManager,
    checkpoint,
    config::{Args, LogFormat},
    controller::{self, Context},
    http::{self, HttpState},
    leader::LeaderElector,
    metrics::Metrics,
};

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A future that resolves once `rx` reads true.
async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "podrestore-operator".to_owned());
    format!("{host}-{}", std::process::id())
}

enum Ending {
    Shutdown,
    LeadershipLost,
    ControllerEnded,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("load the Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if let Err(err) = signal().await {
            warn!(error = %err, "no signal handling");
            return;
        }
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    let http_task = tokio::spawn(http::serve(
        listener,
        HttpState {
            registry: Arc::new(registry),
            ready: ready.clone(),
        },
        until(stop_rx.clone()),
    ));

    let version = client
        .apiserver_version()
        .await
        .context("reach the Kubernetes API server")?;
    ready.store(true, Ordering::Relaxed);
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    info!(%identity, apiserver = %version.git_version, "podrestore operator started; electing a leader");

    let elector = LeaderElector::new(
        client.clone(),
        &args.namespace,
        &args.lease_name,
        &identity,
        args.lease_duration(),
    );
    tokio::select! {
        _ = elector.acquire() => {}
        _ = until(stop_rx.clone()) => {
            let _ = http_task.await;
            return Ok(());
        }
    }
    metrics.set_leader(true);

    let endpoints = args.endpoints();
    let certs = Arc::new(CertManager::new(
        client.clone(),
        args.namespace.clone(),
        args.ca_secret.clone(),
        args.agent_tls_secret.clone(),
        args.operator_name.clone(),
        endpoints.keys().cloned().collect::<BTreeSet<_>>(),
    ));
    if let Err(err) = certs.reconcile().await {
        warn!(error = %err, "first certificate reconcile failed; retrying in the background");
    }
    let agents = Arc::new(GrpcAgents::new(
        client.clone(),
        args.agent_namespace().to_owned(),
        args.agent_selector.clone(),
        args.agent_port,
        endpoints,
        certs.clone(),
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "podrestore-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    let checkpoint_ctx = Arc::new(checkpoint::Context::new(
        client.clone(),
        recorder.clone(),
        metrics.clone(),
        agents.clone(),
    ));
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        metrics.clone(),
        agents,
        args.allowed_source_namespaces.clone(),
    ));

    let (leader_stop_tx, leader_stop_rx) = watch::channel(false);
    let cert_task = tokio::spawn({
        let certs = certs.clone();
        let every = Duration::from_secs(args.cert_check_seconds.max(5));
        let stop = until(leader_stop_rx.clone());
        async move { certs.run(every, stop).await }
    });
    let checkpoint_task = tokio::spawn({
        let ctx = checkpoint_ctx.clone();
        let namespace = args.watch_namespace.clone();
        let stop = until(leader_stop_rx.clone());
        async move { checkpoint::run(ctx, namespace.as_deref(), stop).await }
    });
    let controller = controller::run(
        ctx.clone(),
        args.watch_namespace.as_deref(),
        until(leader_stop_rx),
    );
    tokio::pin!(controller);
    info!("leading: controllers running");

    let ending = tokio::select! {
        _ = elector.keep() => Ending::LeadershipLost,
        _ = until(stop_rx) => Ending::Shutdown,
        _ = &mut controller => Ending::ControllerEnded,
    };
    let _ = leader_stop_tx.send(true);
    metrics.set_leader(false);
    match ending {
        Ending::LeadershipLost => {
            // Another replica may act already: stop at once rather than finish reconciles.
            anyhow::bail!(
                "lost the leader Lease; exiting so that a fresh start rejoins the election"
            )
        }
        Ending::ControllerEnded => anyhow::bail!("the controller stopped unexpectedly"),
        Ending::Shutdown => {
            // Running reconciles finish (a restore in progress records its result), then
            // the Lease is released so a standby takes over without waiting for it.
            // Keep renewing meanwhile, so that no standby takes over under a running
            // reconcile.
            let idle = async {
                while ctx.in_flight() + checkpoint_ctx.in_flight() > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = &mut controller => {}
                _ = idle => {}
                _ = elector.keep() => warn!("lost the leader Lease while finishing reconciles"),
            }
            let _ = cert_task.await;
            // No PodCheckpoint reconcile runs now; the controller's own graceful shutdown
            // can wait forever when its first list never completed (no CRD yet).
            checkpoint_task.abort();
            if let Err(err) = elector.release().await {
                warn!(error = %err, "cannot release the leader Lease; it expires on its own");
            }
            let _ = http_task.await;
            Ok(())
        }
    }
}
