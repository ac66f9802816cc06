//! The listener: TCP accept, TLS handshake with the client-certificate check, and the
//! tonic server on top; plus the plain HTTP probe and metrics endpoint.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use prometheus_client::registry::Registry;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::{AgentService, tls::ReloadingServerConfig};

/// Errors of the servers.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The probe server failed.
    #[error("probe server: {0}")]
    Probe(#[source] io::Error),
}

/// Timing of the gRPC listener.
#[derive(Clone, Copy, Debug)]
pub struct ListenerOptions {
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How often the TLS files are checked for changes.
    pub tls_reload_interval: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            tls_reload_interval: Duration::from_secs(30),
        }
    }
}

/// Serves `service` on `listener` over mutual TLS until `shutdown` resolves. Connections
/// whose handshake fails (no client certificate, a certificate from another CA or without
/// the operator's name) never reach the gRPC layer.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    service: AgentService,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (tx, rx) = mpsc::channel::<Result<TlsStream<TcpStream>, io::Error>>(64);
    let accept = tokio::spawn(accept_loop(
        listener,
        tls.clone(),
        options.handshake_timeout,
        tx,
    ));
    let reload = tokio::spawn(reload_loop(tls, options.tls_reload_interval));
    let result = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    accept.abort();
    reload.abort();
    result.map_err(ServeError::from)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    handshake_timeout: Duration,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, io::Error>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let acceptor = TlsAcceptor::from(tls.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    debug!(%peer, "mutual TLS established");
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(err)) => warn!(%peer, error = %err, "TLS handshake refused"),
                Err(_) => warn!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

async fn reload_loop(tls: Arc<ReloadingServerConfig>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match tls.reload() {
            Ok(true) => info!("reloaded the TLS certificate and CA bundle"),
            Ok(false) => {}
            Err(err) => warn!(error = %err, "cannot reload TLS files; keeping the previous ones"),
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` over plain HTTP on `addr` until `shutdown`
/// resolves. The probes say whether the process serves; they carry no secrets.
pub async fn serve_probes(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (StatusCode::OK, body),
                        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Probe)
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| io::Error::new(err.kind(), format!("bind {addr}: {err}")))
}
