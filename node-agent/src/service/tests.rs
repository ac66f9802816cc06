//! Tests of the service with a fake engine: idempotency, restart, cleanup, validation;
//! and of mutual TLS over real loopback connections.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex as StdMutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::StreamExt;
use tokio::sync::Notify;

use super::*;

const UID: &str = "11111111-2222-3333-4444-555555555555";
const POD_UID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// An engine that records its calls and does what the test says.
#[derive(Default)]
struct FakeEngine {
    restores: AtomicUsize,
    stops: StdMutex<Vec<(String, Option<i64>)>>,
    /// When set, restore waits for a notification before it returns.
    gate: Option<Arc<Notify>>,
    /// When set, restore fails with it.
    fail: Option<EngineError>,
}

#[async_trait::async_trait]
impl RestoreEngine for FakeEngine {
    async fn criu_version(&self) -> Result<String, EngineError> {
        Ok("4.2.1".into())
    }

    async fn inspect(&self, archive: &Path) -> Result<ArchiveInfo, EngineError> {
        Ok(ArchiveInfo {
            pod_namespace: "team-a".into(),
            pod_name: "counter".into(),
            container_name: "counter".into(),
            checkpointed_at: None,
            size: std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0),
            sha256: String::new(),
            criu_version: None,
        })
    }

    async fn restore(
        &self,
        job: RestoreJob,
        progress: ProgressReporter,
    ) -> Result<RestoreOutcome, EngineError> {
        self.restores.fetch_add(1, Ordering::SeqCst);
        assert!(job.work_dir.is_dir(), "the service creates the work dir");
        progress.phase(Phase::Preparing, "unpacking");
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        progress.phase(Phase::Restoring, "criu restore");
        if let Some(err) = &self.fail {
            return Err(err.clone());
        }
        Ok(RestoreOutcome {
            container_id: job.target.container_id,
            pid: 4242,
            archive_sha256: "ab".repeat(32),
            archive_size: 10,
            criu_version: "4.2.1".into(),
            extra: Default::default(),
        })
    }

    async fn is_running(&self, _uid: &str, _outcome: &RestoreOutcome) -> Result<bool, EngineError> {
        Ok(true)
    }

    async fn stop(&self, uid: &str, outcome: Option<&RestoreOutcome>) -> Result<bool, EngineError> {
        self.stops
            .lock()
            .map_err(|_| EngineError::new(EngineErrorKind::Internal, "poisoned"))?
            .push((uid.to_owned(), outcome.map(|o| o.pid)));
        Ok(outcome.is_some())
    }
}

struct Fixture {
    _root: tempfile::TempDir,
    state: PathBuf,
    archive: PathBuf,
    checkpoints: PathBuf,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    let checkpoints = root.path().join("checkpoints");
    let state = root.path().join("state");
    std::fs::create_dir_all(&checkpoints).expect("mkdir");
    let archive = checkpoints.join("checkpoint-counter.tar");
    std::fs::write(&archive, b"archive bytes").expect("write archive");
    Fixture {
        _root: root,
        state,
        archive,
        checkpoints,
    }
}

async fn service(fx: &Fixture, engine: Arc<FakeEngine>) -> AgentService {
    AgentService::start(
        engine,
        ServiceConfig {
            node_name: "node-a".into(),
            state_dir: fx.state.clone(),
            checkpoint_dirs: vec![fx.checkpoints.clone()],
        },
        Metrics::default(),
    )
    .await
    .expect("service starts")
}

fn request(fx: &Fixture) -> pb::RestoreRequest {
    pb::RestoreRequest {
        restore: Some(pb::RestoreRef {
            uid: UID.into(),
            namespace: "team-a".into(),
            name: "restore-1".into(),
        }),
        checkpoint: Some(pb::CheckpointSource {
            source: Some(pb::checkpoint_source::Source::LocalArchive(
                pb::LocalArchive {
                    path: fx.archive.display().to_string(),
                },
            )),
        }),
        target: Some(pb::TargetContainer {
            pod_uid: POD_UID.into(),
            pod_namespace: "team-a".into(),
            pod_name: "forensic".into(),
            container_name: "sleeper".into(),
            container_id: "containerd://0123".into(),
        }),
        options: Some(pb::RestoreOptions {
            timeout_seconds: 60,
            ..Default::default()
        }),
    }
}

/// Runs Restore and collects its events; the last one must be the result.
async fn restore(
    svc: &AgentService,
    req: pb::RestoreRequest,
) -> Result<(Vec<pb::Progress>, pb::RestoreResult), Status> {
    let mut stream = svc.restore(Request::new(req)).await?.into_inner();
    let mut progress = Vec::new();
    while let Some(event) = stream.next().await {
        match event?.event {
            Some(pb::restore_event::Event::Progress(p)) => progress.push(p),
            Some(pb::restore_event::Event::Result(r)) => {
                assert!(stream.next().await.is_none(), "the result ends the stream");
                return Ok((progress, r));
            }
            None => panic!("empty event"),
        }
    }
    panic!("stream ended without a result")
}

fn pid_of(result: &pb::RestoreResult) -> Option<i64> {
    match &result.outcome {
        Some(pb::restore_result::Outcome::Success(s)) => Some(s.pid),
        _ => None,
    }
}

fn failure_of(result: &pb::RestoreResult) -> Option<&pb::RestoreFailure> {
    match &result.outcome {
        Some(pb::restore_result::Outcome::Failure(f)) => Some(f),
        _ => None,
    }
}

#[tokio::test]
async fn restore_streams_progress_then_result_and_replays_it() {
    let fx = fixture();
    let engine = Arc::new(FakeEngine::default());
    let svc = service(&fx, engine.clone()).await;

    let (progress, result) = restore(&svc, request(&fx)).await.expect("restore");
    let phases: Vec<i32> = progress.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        vec![
            pb::Phase::Accepted as i32,
            pb::Phase::Preparing as i32,
            pb::Phase::Restoring as i32
        ]
    );
    assert_eq!(pid_of(&result), Some(4242));
    assert!(!result.replayed);

    let (progress, again) = restore(&svc, request(&fx)).await.expect("replay");
    assert!(progress.is_empty());
    assert!(again.replayed);
    assert_eq!(pid_of(&again), Some(4242));
    assert_eq!(engine.restores.load(Ordering::SeqCst), 1);

    // A new agent process on the same state directory answers the same.
    let restarted = service(&fx, engine.clone()).await;
    let (_, third) = restore(&restarted, request(&fx))
        .await
        .expect("replay after restart");
    assert_eq!(pid_of(&third), Some(4242));
    assert_eq!(engine.restores.load(Ordering::SeqCst), 1);

    let status = restarted
        .status(Request::new(pb::StatusRequest {
            restore_uid: UID.into(),
        }))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::RestoreState::Succeeded as i32);
    assert!(status.process_running);
}

#[tokio::test]
async fn concurrent_requests_share_one_restore() {
    let fx = fixture();
    let gate = Arc::new(Notify::new());
    let engine = Arc::new(FakeEngine {
        gate: Some(gate.clone()),
        ..FakeEngine::default()
    });
    let svc = service(&fx, engine.clone()).await;

    let first = tokio::spawn({
        let svc = svc.clone();
        let req = request(&fx);
        async move { restore(&svc, req).await }
    });
    // Wait until the engine runs, then send the same request again.
    while engine.restores.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let status = svc
        .status(Request::new(pb::StatusRequest {
            restore_uid: UID.into(),
        }))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::RestoreState::Running as i32);
    let second = tokio::spawn({
        let svc = svc.clone();
        let req = request(&fx);
        async move { restore(&svc, req).await }
    });
    tokio::task::yield_now().await;
    gate.notify_one();

    let (_, a) = first.await.expect("join").expect("first");
    let (_, b) = second.await.expect("join").expect("second");
    assert_eq!(pid_of(&a), Some(4242));
    assert_eq!(pid_of(&b), Some(4242));
    assert_eq!(engine.restores.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn resolved_target_details_may_change_but_nothing_else() {
    let fx = fixture();
    let engine = Arc::new(FakeEngine::default());
    let svc = service(&fx, engine.clone()).await;
    restore(&svc, request(&fx)).await.expect("restore");

    // A resuming operator may no longer see the pod: it sends what it still knows.
    let mut resumed = request(&fx);
    if let Some(t) = resumed.target.as_mut() {
        t.container_id = "containerd://4567".into();
        t.pod_uid.clear();
        t.container_name.clear();
    }
    assert!(restore(&svc, resumed).await.is_ok());

    let mut other_options = request(&fx);
    other_options.options = Some(pb::RestoreOptions {
        tcp_established: true,
        ..Default::default()
    });
    let err = restore(&svc, other_options).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert_eq!(engine.restores.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_restore_interrupted_by_an_agent_restart_is_never_run_again() {
    let fx = fixture();
    // What a killed agent leaves behind: a record that says the engine was started.
    let store = Store::open(&fx.state).expect("store");
    let req = request(&fx);
    store
        .save(&Record {
            uid: UID.into(),
            namespace: "team-a".into(),
            name: "restore-1".into(),
            fingerprint: fingerprint(&req),
            state: RecordState::Running,
            work_dir: store.work_dir(UID),
            started_at: SystemTime::now(),
            finished_at: None,
            outcome: None,
            failure: None,
            cleanup: None,
        })
        .expect("save");

    let engine = Arc::new(FakeEngine::default());
    let svc = service(&fx, engine.clone()).await;
    let (_, result) = restore(&svc, req).await.expect("answer");
    assert_eq!(
        failure_of(&result).map(|f| f.reason.as_str()),
        Some("Interrupted")
    );
    assert!(result.replayed);
    assert_eq!(engine.restores.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn engine_failures_are_recorded_with_their_reason() {
    let fx = fixture();
    let engine = Arc::new(FakeEngine {
        fail: Some(
            EngineError::new(EngineErrorKind::CriuFailed, "criu restore failed")
                .with_log("Error (criu/cr-restore.c:1): boom"),
        ),
        ..FakeEngine::default()
    });
    let svc = service(&fx, engine.clone()).await;
    let (_, result) = restore(&svc, request(&fx)).await.expect("answer");
    let failure = failure_of(&result).expect("failure");
    assert_eq!(failure.reason, "CriuFailed");
    assert!(failure.log_excerpt.contains("boom"));
    let (_, again) = restore(&svc, request(&fx)).await.expect("replay");
    assert_eq!(
        failure_of(&again).map(|f| f.reason.as_str()),
        Some("CriuFailed")
    );
    assert_eq!(engine.restores.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cleanup_stops_the_tree_removes_files_and_blocks_later_restores() {
    let fx = fixture();
    let engine = Arc::new(FakeEngine::default());
    let svc = service(&fx, engine.clone()).await;
    restore(&svc, request(&fx)).await.expect("restore");
    let work_dir = fx.state.join("work").join(UID);
    std::fs::write(work_dir.join("scratch"), b"x").expect("scratch file");

    let cleanup = || {
        svc.cleanup(Request::new(pb::CleanupRequest {
            restore_uid: UID.into(),
        }))
    };
    let response = cleanup().await.expect("cleanup").into_inner();
    assert!(response.process_stopped);
    assert_eq!(response.removed, vec![work_dir.display().to_string()]);
    assert!(!work_dir.exists());
    assert_eq!(
        *engine.stops.lock().expect("lock"),
        vec![(UID.to_owned(), Some(4242))]
    );

    // Idempotent.
    assert!(cleanup().await.is_ok());

    let err = restore(&svc, request(&fx)).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let status = svc
        .status(Request::new(pb::StatusRequest {
            restore_uid: UID.into(),
        }))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::RestoreState::CleanedUp as i32);
}

#[tokio::test]
async fn cleanup_before_any_restore_is_fine_and_final() {
    let fx = fixture();
    let engine = Arc::new(FakeEngine::default());
    let svc = service(&fx, engine.clone()).await;
    let response = svc
        .cleanup(Request::new(pb::CleanupRequest {
            restore_uid: UID.into(),
        }))
        .await
        .expect("cleanup")
        .into_inner();
    assert!(!response.process_stopped);
    // A Restore that arrives late (a stale operator) must not run.
    let err = restore(&svc, request(&fx)).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(engine.restores.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn invalid_requests_change_nothing() {
    let fx = fixture();
    let outside = fx.state.parent().expect("root").join("outside.tar");
    std::fs::write(&outside, b"x").expect("write");
    let engine = Arc::new(FakeEngine::default());
    let svc = service(&fx, engine.clone()).await;

    type Mutation = fn(&mut pb::RestoreRequest, &Path);
    let cases: Vec<(&str, Mutation, tonic::Code)> = vec![
        (
            "archive outside the checkpoint dirs",
            |r, outside| {
                r.checkpoint = Some(pb::CheckpointSource {
                    source: Some(pb::checkpoint_source::Source::LocalArchive(
                        pb::LocalArchive {
                            path: outside.display().to_string(),
                        },
                    )),
                })
            },
            tonic::Code::PermissionDenied,
        ),
        (
            "uid that is a path",
            |r, _| {
                if let Some(x) = r.restore.as_mut() {
                    x.uid = "../../etc".into()
                }
            },
            tonic::Code::InvalidArgument,
        ),
        (
            "target in another namespace",
            |r, _| {
                if let Some(t) = r.target.as_mut() {
                    t.pod_namespace = "team-b".into()
                }
            },
            tonic::Code::InvalidArgument,
        ),
        (
            "timeout out of range",
            |r, _| {
                r.options = Some(pb::RestoreOptions {
                    timeout_seconds: 7200,
                    ..Default::default()
                })
            },
            tonic::Code::InvalidArgument,
        ),
        (
            "no source",
            |r, _| r.checkpoint = None,
            tonic::Code::InvalidArgument,
        ),
    ];
    for (name, mutate, code) in cases {
        let mut req = request(&fx);
        mutate(&mut req, &outside);
        let err = restore(&svc, req).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
    }
    assert_eq!(engine.restores.load(Ordering::SeqCst), 0);
    let records = std::fs::read_dir(fx.state.join("restores"))
        .expect("records dir")
        .count();
    assert_eq!(records, 0, "no record for a refused request");
}

#[tokio::test]
async fn inspect_and_version() {
    let fx = fixture();
    let svc = service(&fx, Arc::new(FakeEngine::default())).await;
    let info = svc
        .inspect(Request::new(pb::InspectRequest {
            checkpoint: request(&fx).checkpoint,
        }))
        .await
        .expect("inspect")
        .into_inner();
    assert_eq!(info.pod_namespace, "team-a");
    assert_eq!(info.size, 13);
    let version = svc
        .version(Request::new(pb::VersionRequest {}))
        .await
        .expect("version")
        .into_inner();
    assert_eq!(version.node_name, "node-a");
    assert_eq!(version.criu_version, "4.2.1");
}

/// Mutual TLS over real loopback connections.
mod mtls {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

    use super::*;
    use crate::service::{
        server::{ListenerOptions, serve_grpc},
        tls::{ReloadingServerConfig, TlsFiles},
    };

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `name` with the given extended key usage; returns (cert PEM, key PEM).
    fn leaf(ca: &Ca, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    async fn start_agent(dir: &Path, ca: &Ca) -> (std::net::SocketAddr, Fixture) {
        let (cert, key) = leaf(
            ca,
            "podrestore-agent.node-a",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, key).expect("write");
        std::fs::write(&files.client_ca, &ca.pem).expect("write");
        tls::check_serving_name(&files, "node-a").expect("serving name");
        let tls = Arc::new(
            ReloadingServerConfig::load(files, vec![tls::DEFAULT_OPERATOR_NAME.to_owned()])
                .expect("tls config"),
        );
        let fx = fixture();
        let svc = service(&fx, Arc::new(FakeEngine::default())).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_grpc(
            listener,
            tls,
            svc,
            ListenerOptions::default(),
            futures::future::pending(),
        ));
        (addr, fx)
    }

    async fn call_version(
        addr: std::net::SocketAddr,
        tls: ClientTlsConfig,
    ) -> Result<pb::VersionResponse, String> {
        let channel: Channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        pb::agent_client::AgentClient::new(channel)
            .version(pb::VersionRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| format!("call: {e:?}"))
    }

    fn client_tls(ca_pem: &str, identity: Option<(String, String)>) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("podrestore-agent.node-a");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }

    #[tokio::test]
    async fn only_the_operator_with_a_certificate_from_the_ca_gets_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca("podrestore-ca");
        let (addr, _fx) = start_agent(dir.path(), &ca).await;

        let operator = leaf(
            &ca,
            tls::DEFAULT_OPERATOR_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let ok = call_version(addr, client_tls(&ca.pem, Some(operator.clone()))).await;
        assert_eq!(ok.map(|v| v.node_name), Ok("node-a".to_owned()));

        // Each refusal happens in the handshake, with the TLS alert that says why.
        let refused = [
            (
                "no client certificate",
                "CertificateRequired",
                client_tls(&ca.pem, None),
            ),
            (
                "certificate from another CA",
                "UnknownCA",
                client_tls(
                    &ca.pem,
                    Some(leaf(
                        &ca_other(),
                        tls::DEFAULT_OPERATOR_NAME,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    )),
                ),
            ),
            (
                "right CA, another name",
                "BadCertificate",
                client_tls(
                    &ca.pem,
                    Some(leaf(
                        &ca,
                        "someone-else",
                        ExtendedKeyUsagePurpose::ClientAuth,
                    )),
                ),
            ),
            (
                "right CA and name, server-only usage",
                "UnsupportedCertificate",
                client_tls(
                    &ca.pem,
                    Some(leaf(
                        &ca,
                        tls::DEFAULT_OPERATOR_NAME,
                        ExtendedKeyUsagePurpose::ServerAuth,
                    )),
                ),
            ),
        ];
        for (case, alert, tls) in refused {
            let result = call_version(addr, tls).await;
            let err = result.expect_err(case);
            assert!(
                err.contains(alert),
                "{case}: want TLS alert {alert}, got {err}"
            );
        }
    }

    #[test]
    fn a_rotated_certificate_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca("podrestore-ca");
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: dir.path().join("ca.crt"),
        };
        let write_leaf = || {
            let (cert, key) = leaf(
                &ca,
                "podrestore-agent.node-a",
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            std::fs::write(&files.cert, cert).expect("write");
            std::fs::write(&files.key, key).expect("write");
        };
        write_leaf();
        std::fs::write(&files.client_ca, &ca.pem).expect("write");
        let config = ReloadingServerConfig::load(files.clone(), vec!["podrestore-operator".into()])
            .expect("load");
        assert!(!config.reload().expect("reload"), "unchanged files");

        let before = config.current();
        write_leaf();
        assert!(config.reload().expect("reload"), "a new certificate");
        assert!(!Arc::ptr_eq(&before, &config.current()));

        let good = config.current();
        std::fs::write(&files.key, "not a key").expect("write");
        assert!(config.reload().is_err());
        assert!(
            Arc::ptr_eq(&good, &config.current()),
            "the previous one stays"
        );
    }

    fn ca_other() -> Ca {
        ca("another-ca")
    }

    #[tokio::test]
    async fn the_operator_refuses_an_agent_certificate_for_another_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca("podrestore-ca");
        let (addr, _fx) = start_agent(dir.path(), &ca).await;
        let operator = leaf(
            &ca,
            tls::DEFAULT_OPERATOR_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let wrong_node = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .identity(Identity::from_pem(operator.0, operator.1))
            .domain_name("podrestore-agent.node-b");
        assert!(call_version(addr, wrong_node).await.is_err());
    }
}
