//! Tests of the pull's resume and verify rules with in-memory sources, and of a pull
//! between two agent services over real loopback mutual TLS.

use std::sync::{Arc, Mutex};

use super::*;

fn remote_of(endpoint: &str) -> Remote {
    Remote {
        node_name: "node-a".into(),
        path: "/var/lib/kubelet/checkpoints/c.tar".into(),
        endpoint: endpoint.into(),
    }
}

fn header_of(data: &[u8]) -> pb::FetchArchiveHeader {
    pb::FetchArchiveHeader {
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    }
}

fn header_chunk(h: pb::FetchArchiveHeader) -> Result<pb::FetchArchiveChunk, Status> {
    Ok(pb::FetchArchiveChunk {
        chunk: Some(pb::fetch_archive_chunk::Chunk::Header(h)),
    })
}

fn data_chunk(d: &[u8]) -> Result<pb::FetchArchiveChunk, Status> {
    Ok(pb::FetchArchiveChunk {
        chunk: Some(pb::fetch_archive_chunk::Chunk::Data(d.to_vec())),
    })
}

/// A source serving `versions[attempt]` (the last one repeats), cut after `cut[attempt]`
/// bytes when given, with `flip` applied to the data; records the offsets asked for.
struct FakeSource {
    versions: Vec<Vec<u8>>,
    cut: Vec<Option<usize>>,
    flip: Option<usize>,
    offsets: Arc<Mutex<Vec<u64>>>,
}

impl FakeSource {
    fn into_fetch(self) -> (Fetch, Arc<Mutex<Vec<u64>>>) {
        let offsets = self.offsets.clone();
        let mut attempt = 0usize;
        let fetch: Fetch = Box::new(move |offset| {
            let n = attempt;
            attempt += 1;
            self.offsets.lock().expect("lock").push(offset);
            let data = self.versions[n.min(self.versions.len() - 1)].clone();
            let header = header_of(&data);
            let mut sent = data;
            if let Some(at) = self.flip {
                sent[at] ^= 0x01;
            }
            let end = self.cut.get(n).copied().flatten().unwrap_or(sent.len());
            let start = usize::try_from(offset).expect("offset").min(end);
            let mut items = vec![header_chunk(header)];
            for piece in sent[start..end].chunks(3) {
                items.push(data_chunk(piece));
            }
            if end < sent.len() {
                items.push(Err(Status::unavailable("source agent went away")));
            }
            Box::pin(async move { Ok(Box::pin(futures::stream::iter(items)) as ChunkStream) })
        });
        (fetch, offsets)
    }
}

fn source(versions: Vec<Vec<u8>>, cut: Vec<Option<usize>>, flip: Option<usize>) -> FakeSource {
    FakeSource {
        versions,
        cut,
        flip,
        offsets: Arc::default(),
    }
}

fn no_progress(_: u64, _: u64) {}

#[test]
fn resume_offset_keeps_bytes_only_of_the_same_archive() {
    let h = pb::FetchArchiveHeader {
        size: 100,
        sha256: "aa".into(),
    };
    let other = pb::FetchArchiveHeader {
        size: 100,
        sha256: "bb".into(),
    };
    assert_eq!(resume_offset(0, None, &h), 0);
    assert_eq!(resume_offset(40, None, &h), 40);
    assert_eq!(resume_offset(40, Some(&h), &h), 40);
    assert_eq!(resume_offset(100, Some(&h), &h), 100);
    assert_eq!(
        resume_offset(40, Some(&other), &h),
        0,
        "the source's file changed"
    );
    assert_eq!(resume_offset(140, None, &h), 0, "longer than the archive");
}

#[test]
fn remote_sources_are_checked() {
    let ok = pb::RemoteArchive {
        node_name: "node-a".into(),
        path: "/var/lib/kubelet/checkpoints/c.tar".into(),
        endpoint: "10.200.0.11:9443".into(),
    };
    assert_eq!(
        remote(&ok).map(|r| r.endpoint),
        Ok("10.200.0.11:9443".into())
    );
    let bad = [
        pb::RemoteArchive {
            node_name: "Node_A".into(),
            ..ok.clone()
        },
        pb::RemoteArchive {
            path: "relative.tar".into(),
            ..ok.clone()
        },
        pb::RemoteArchive {
            path: "/a/../b.tar".into(),
            ..ok.clone()
        },
        pb::RemoteArchive {
            endpoint: "10.200.0.11".into(),
            ..ok.clone()
        },
        pb::RemoteArchive {
            endpoint: "https://x:1/".into(),
            ..ok.clone()
        },
    ];
    for case in bad {
        assert!(remote(&case).is_err(), "{case:?}");
    }
}

#[tokio::test]
async fn a_whole_transfer_lands_only_after_its_digest_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (partial, dest) = (dir.path().join("a.partial"), dir.path().join("a.tar"));
    let data = b"checkpoint archive bytes".to_vec();
    let (mut fetch, offsets) = source(vec![data.clone()], vec![], None).into_fetch();
    let seen = Mutex::new(Vec::new());
    let progress = |d, t| seen.lock().expect("lock").push((d, t));
    let pulled = pull(&remote_of("x:1"), &mut fetch, &partial, &dest, &progress)
        .await
        .expect("pull");
    assert_eq!(pulled.sha256, header_of(&data).sha256);
    assert_eq!(std::fs::read(&dest).expect("dest"), data);
    assert!(!partial.exists());
    assert_eq!(*offsets.lock().expect("lock"), vec![0]);
    let last = seen.lock().expect("lock").last().copied();
    assert_eq!(last, Some((data.len() as u64, data.len() as u64)));
}

#[tokio::test]
async fn a_cut_transfer_resumes_from_the_partial_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (partial, dest) = (dir.path().join("a.partial"), dir.path().join("a.tar"));
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let (mut fetch, offsets) = source(vec![data.clone()], vec![Some(600)], None).into_fetch();
    let pulled = pull(&remote_of("x:1"), &mut fetch, &partial, &dest, &no_progress)
        .await
        .expect("pull");
    assert_eq!(*offsets.lock().expect("lock"), vec![0, 600]);
    assert_eq!(pulled.transferred, 1000, "no byte moved twice");
    assert_eq!(std::fs::read(&dest).expect("dest"), data);
}

#[tokio::test]
async fn a_source_whose_archive_changed_restarts_from_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (partial, dest) = (dir.path().join("a.partial"), dir.path().join("a.tar"));
    let old = vec![1u8; 500];
    let new = vec![2u8; 500];
    let (mut fetch, offsets) = source(vec![old, new.clone()], vec![Some(200)], None).into_fetch();
    pull(&remote_of("x:1"), &mut fetch, &partial, &dest, &no_progress)
        .await
        .expect("pull");
    // The second attempt announces another digest: the 200 kept bytes are dropped.
    assert_eq!(*offsets.lock().expect("lock"), vec![0, 200, 0]);
    assert_eq!(std::fs::read(&dest).expect("dest"), new);
}

#[tokio::test]
async fn flipped_bytes_fail_the_digest_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (partial, dest) = (dir.path().join("a.partial"), dir.path().join("a.tar"));
    let data = vec![7u8; 100];
    let (mut fetch, _) = source(vec![data], vec![], Some(42)).into_fetch();
    let err = pull(&remote_of("x:1"), &mut fetch, &partial, &dest, &no_progress)
        .await
        .expect_err("mismatch");
    assert_eq!(err.reason(), REASON_DIGEST_MISMATCH, "{err}");
    assert!(!dest.exists() && !partial.exists());
}

#[tokio::test]
async fn a_source_that_keeps_failing_ends_the_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (partial, dest) = (dir.path().join("a.partial"), dir.path().join("a.tar"));
    let mut fetch: Fetch =
        Box::new(|_| Box::pin(async { Err(Status::unavailable("connection refused")) }));
    let err = pull(&remote_of("x:1"), &mut fetch, &partial, &dest, &no_progress)
        .await
        .expect_err("fails");
    assert_eq!(err.reason(), REASON_TRANSFER_FAILED);
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert!(!dest.exists());
}

/// Two agent services on loopback with mutual TLS: node-b pulls from node-a.
mod two_agents {
    use std::{
        path::Path,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use futures::StreamExt;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use crate::service::{
        AgentService, ArchiveInfo, EngineError, ProgressReporter, RestoreEngine, RestoreJob,
        RestoreOutcome, ServiceConfig,
        metrics::Metrics,
        server::{ListenerOptions, serve_grpc},
        tls::{self, ReloadingServerConfig, TlsFiles},
    };

    use super::*;

    const UID: &str = "99999999-2222-3333-4444-555555555555";
    const POD_UID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    /// Records restores and the sha256 of the archive each one read.
    #[derive(Default)]
    struct Engine {
        restores: AtomicUsize,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl RestoreEngine for Engine {
        async fn criu_version(&self) -> Result<String, EngineError> {
            Ok("4.2.1".into())
        }

        async fn inspect(&self, _archive: &Path) -> Result<ArchiveInfo, EngineError> {
            Ok(ArchiveInfo::default())
        }

        async fn restore(
            &self,
            job: RestoreJob,
            _progress: ProgressReporter,
        ) -> Result<RestoreOutcome, EngineError> {
            self.restores.fetch_add(1, Ordering::SeqCst);
            let (size, sha256) = digest_file(&job.archive).expect("archive in place");
            self.seen.lock().expect("lock").push(sha256.clone());
            Ok(RestoreOutcome {
                container_id: job.target.container_id,
                pid: 4242,
                archive_sha256: sha256,
                archive_size: size,
                criu_version: "4.2.1".into(),
                extra: Default::default(),
            })
        }

        async fn is_running(
            &self,
            _uid: &str,
            _outcome: &RestoreOutcome,
        ) -> Result<bool, EngineError> {
            Ok(true)
        }

        async fn stop(
            &self,
            _uid: &str,
            _outcome: Option<&RestoreOutcome>,
        ) -> Result<bool, EngineError> {
            Ok(false)
        }
    }

    struct Pki {
        ca_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, "podrestore-ca");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("ca");
            Self {
                ca_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        fn leaf(&self, names: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> (String, String) {
            let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = usages;
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.issuer).expect("leaf");
            (cert.pem(), key.serialize_pem())
        }
    }

    struct Node {
        _dir: tempfile::TempDir,
        addr: std::net::SocketAddr,
        service: AgentService,
        engine: Arc<Engine>,
        checkpoints: PathBuf,
        state: PathBuf,
    }

    /// Starts the agent of `node` with the agents' certificate (both usages, every node's
    /// name), accepting the operator and peer agents like `serve` does.
    async fn node(pki: &Pki, node: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let checkpoints = dir.path().join("checkpoints");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&checkpoints).expect("mkdir");
        let (cert, key) = pki.leaf(
            &["podrestore-agent.node-a", "podrestore-agent.node-b"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: dir.path().join("ca.crt"),
        };
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, key).expect("write");
        std::fs::write(&files.client_ca, &pki.ca_pem).expect("write");
        let names = vec![
            tls::DEFAULT_OPERATOR_NAME.to_owned(),
            tls::agent_server_name(node),
        ];
        let tls_config = Arc::new(ReloadingServerConfig::load(files.clone(), names).expect("tls"));
        let engine = Arc::new(Engine::default());
        let service = AgentService::start(
            engine.clone(),
            ServiceConfig {
                node_name: node.into(),
                state_dir: state.clone(),
                checkpoint_dirs: vec![checkpoints.clone()],
            },
            Metrics::default(),
        )
        .await
        .expect("service");
        service.set_peer_tls(files);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_grpc(
            listener,
            tls_config,
            service.clone(),
            ListenerOptions::default(),
            futures::future::pending(),
        ));
        Node {
            _dir: dir,
            addr,
            service,
            engine,
            checkpoints,
            state,
        }
    }

    async fn client(
        pki: &Pki,
        node: &Node,
        name: &str,
        identity: (String, String),
    ) -> pb::agent_client::AgentClient<tonic::transport::Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .identity(Identity::from_pem(identity.0, identity.1))
            .domain_name(tls::agent_server_name(name));
        let channel = Endpoint::from_shared(format!("https://{}", node.addr))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect");
        pb::agent_client::AgentClient::new(channel)
    }

    fn request(source: std::net::SocketAddr, path: &Path) -> pb::RestoreRequest {
        pb::RestoreRequest {
            restore: Some(pb::RestoreRef {
                uid: UID.into(),
                namespace: "forensics".into(),
                name: "from-a".into(),
            }),
            checkpoint: Some(pb::CheckpointSource {
                source: Some(pb::checkpoint_source::Source::RemoteArchive(
                    pb::RemoteArchive {
                        node_name: "node-a".into(),
                        path: path.display().to_string(),
                        endpoint: source.to_string(),
                    },
                )),
            }),
            target: Some(pb::TargetContainer {
                pod_uid: POD_UID.into(),
                pod_namespace: "forensics".into(),
                pod_name: "sandbox".into(),
                container_name: "sandbox".into(),
                container_id: "containerd://abc".into(),
            }),
            options: None,
        }
    }

    /// Runs a restore on `target` and returns (progress events, result).
    async fn restore(
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
        request: pb::RestoreRequest,
    ) -> (Vec<pb::Progress>, pb::RestoreResult) {
        let mut stream = client.restore(request).await.expect("restore").into_inner();
        let mut progress = Vec::new();
        while let Some(event) = stream.next().await {
            match event.expect("event").event {
                Some(pb::restore_event::Event::Progress(p)) => progress.push(p),
                Some(pb::restore_event::Event::Result(r)) => return (progress, r),
                None => {}
            }
        }
        panic!("no result");
    }

    fn archive(node: &Node) -> (PathBuf, Vec<u8>) {
        // Over two chunks, so the stream carries several messages.
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let path = node.checkpoints.join("checkpoint-counter.tar");
        std::fs::write(&path, &data).expect("write");
        (path, data)
    }

    #[tokio::test]
    async fn a_pulled_archive_is_restored_with_the_sources_sha256() {
        let pki = Pki::new();
        let (a, b) = (node(&pki, "node-a").await, node(&pki, "node-b").await);
        let (path, data) = archive(&a);
        let operator = pki.leaf(
            &[tls::DEFAULT_OPERATOR_NAME],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let mut to_b = client(&pki, &b, "node-b", operator).await;
        let (progress, result) = restore(&mut to_b, request(a.addr, &path)).await;
        let Some(pb::restore_result::Outcome::Success(success)) = result.outcome else {
            panic!("restore failed: {result:?}");
        };
        let want = header_of(&data).sha256;
        assert_eq!(success.archive.map(|d| d.sha256), Some(want.clone()));
        assert_eq!(*b.engine.seen.lock().expect("lock"), vec![want]);
        assert_eq!(a.engine.restores.load(Ordering::SeqCst), 0);
        let done = progress
            .iter()
            .filter(|p| p.phase == i32::from(pb::Phase::Transferring))
            .map(|p| (p.bytes_done, p.bytes_total))
            .max();
        let size = data.len() as u64;
        assert_eq!(
            done,
            Some((size, size)),
            "transfer progress reaches the size"
        );
        assert!(
            !b.state
                .join("work")
                .join(UID)
                .join("archive.partial")
                .exists()
        );
    }

    #[tokio::test]
    async fn flipped_bytes_on_the_way_are_detected_and_nothing_is_restored() {
        let pki = Pki::new();
        let (a, b) = (node(&pki, "node-a").await, node(&pki, "node-b").await);
        let (path, _) = archive(&a);
        // Flip one bit of the first data chunk as it arrives on node-b.
        let hook: crate::service::ChunkHook = Arc::new(|chunk: &mut pb::FetchArchiveChunk| {
            if let Some(pb::fetch_archive_chunk::Chunk::Data(d)) = chunk.chunk.as_mut() {
                d[17] ^= 0x20;
            }
        });
        *b.service.inner.chunk_hook.write().expect("lock") = Some(hook);
        let operator = pki.leaf(
            &[tls::DEFAULT_OPERATOR_NAME],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let mut to_b = client(&pki, &b, "node-b", operator).await;
        let (_, result) = restore(&mut to_b, request(a.addr, &path)).await;
        let Some(pb::restore_result::Outcome::Failure(failure)) = result.outcome else {
            panic!("want a failure: {result:?}");
        };
        assert_eq!(
            failure.reason, REASON_DIGEST_MISMATCH,
            "{}",
            failure.message
        );
        assert_eq!(
            b.engine.restores.load(Ordering::SeqCst),
            0,
            "nothing restored"
        );
        let work = b.state.join("work").join(UID);
        assert!(!work.join("archive.tar").exists() && !work.join("archive.partial").exists());
    }

    #[tokio::test]
    async fn a_peer_agent_may_fetch_but_not_restore() {
        let pki = Pki::new();
        let a = node(&pki, "node-a").await;
        let (path, data) = archive(&a);
        let agent = pki.leaf(
            &["podrestore-agent.node-a", "podrestore-agent.node-b"],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let mut peer = client(&pki, &a, "node-a", agent).await;
        let mut stream = peer
            .fetch_archive(pb::FetchArchiveRequest {
                path: path.display().to_string(),
                offset: 100,
                restore_uid: UID.into(),
            })
            .await
            .expect("fetch")
            .into_inner();
        let mut got = Vec::new();
        let mut header = None;
        while let Some(chunk) = stream.next().await {
            match chunk.expect("chunk").chunk {
                Some(pb::fetch_archive_chunk::Chunk::Header(h)) => header = Some(h),
                Some(pb::fetch_archive_chunk::Chunk::Data(d)) => {
                    assert!(d.len() <= CHUNK_SIZE);
                    got.extend_from_slice(&d);
                }
                None => {}
            }
        }
        assert_eq!(header, Some(header_of(&data)), "digest of the whole file");
        assert_eq!(got, data[100..], "bytes from the offset");

        let outside = peer
            .fetch_archive(pb::FetchArchiveRequest {
                path: "/etc/shadow".into(),
                offset: 0,
                restore_uid: UID.into(),
            })
            .await
            .expect_err("outside the checkpoint dirs");
        assert_eq!(outside.code(), tonic::Code::PermissionDenied);
        let refused = peer
            .version(pb::VersionRequest {})
            .await
            .expect_err("operator only");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let refused = peer
            .restore(request(a.addr, &path))
            .await
            .expect_err("operator only");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }

    /// A source agent for node-a in a runtime of its own on a thread, serving the files in
    /// `dir`; dropping the runtime ends every task and socket at once, like a killed
    /// process. Returns its address and the switch that kills it.
    fn killable_source(
        pki: &Pki,
        dir: &Path,
        port: u16,
    ) -> (std::net::SocketAddr, std::sync::mpsc::Sender<()>) {
        let (cert, key) = pki.leaf(
            &["podrestore-agent.node-a", "podrestore-agent.node-b"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, key).expect("write");
        std::fs::write(&files.client_ca, &pki.ca_pem).expect("write");
        let checkpoints = dir.join("checkpoints");
        let state = dir.join("state");
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async move {
                let names = vec![
                    tls::DEFAULT_OPERATOR_NAME.to_owned(),
                    tls::agent_server_name("node-a"),
                ];
                let tls_config = Arc::new(ReloadingServerConfig::load(files, names).expect("tls"));
                let service = AgentService::start(
                    Arc::new(Engine::default()),
                    ServiceConfig {
                        node_name: "node-a".into(),
                        state_dir: state,
                        checkpoint_dirs: vec![checkpoints],
                    },
                    Metrics::default(),
                )
                .await
                .expect("service");
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind");
                let _ = ready_tx.send(listener.local_addr().expect("addr"));
                tokio::spawn(serve_grpc(
                    listener,
                    tls_config,
                    service,
                    ListenerOptions::default(),
                    futures::future::pending(),
                ));
                let _ = tokio::task::spawn_blocking(move || killed.recv()).await;
            });
            // The runtime drops here with every connection task.
        });
        (ready.recv().expect("source ready"), kill)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_the_source_agent_mid_transfer_fails_clearly_and_a_retry_completes() {
        let pki = Pki::new();
        let b = node(&pki, "node-b").await;
        let source_dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(source_dir.path().join("checkpoints")).expect("mkdir");
        let data: Vec<u8> = (0..(CHUNK_SIZE * 24)).map(|i| (i % 253) as u8).collect();
        let path = source_dir.path().join("checkpoints/big.tar");
        std::fs::write(&path, &data).expect("write");
        let (addr, kill) = killable_source(&pki, source_dir.path(), 0);

        // Slow the transfer down and kill the source once bytes flow.
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let first_tx = Mutex::new(Some(first_tx));
        let hook: crate::service::ChunkHook = Arc::new(move |chunk: &mut pb::FetchArchiveChunk| {
            if matches!(chunk.chunk, Some(pb::fetch_archive_chunk::Chunk::Data(_))) {
                if let Some(tx) = first_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        *b.service.inner.chunk_hook.write().expect("lock") = Some(hook);
        let operator = pki.leaf(
            &[tls::DEFAULT_OPERATOR_NAME],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let mut to_b = client(&pki, &b, "node-b", operator).await;
        let mut first = request(addr, &path);
        let restoring = tokio::spawn({
            let mut to_b = to_b.clone();
            let first = first.clone();
            async move { restore(&mut to_b, first).await }
        });
        tokio::task::spawn_blocking(move || first_rx.recv())
            .await
            .expect("join")
            .expect("first chunk");
        kill.send(()).expect("kill the source");
        let (_, result) = restoring.await.expect("join");
        let Some(pb::restore_result::Outcome::Failure(failure)) = result.outcome else {
            panic!("want a failure: {result:?}");
        };
        assert_eq!(
            failure.reason, REASON_TRANSFER_FAILED,
            "{}",
            failure.message
        );
        assert!(failure.message.contains("node-a"), "{}", failure.message);
        assert_eq!(
            b.engine.restores.load(Ordering::SeqCst),
            0,
            "nothing restored"
        );
        let work = b.state.join("work").join(UID);
        assert!(!work.join("archive.tar").exists());

        // The source agent comes back on the same address; a new PodRestore completes.
        *b.service.inner.chunk_hook.write().expect("lock") = None;
        let (again, _keep) = killable_source(&pki, source_dir.path(), addr.port());
        assert_eq!(again, addr);
        if let Some(r) = first.restore.as_mut() {
            r.uid = "99999999-2222-3333-4444-666666666666".into();
            r.name = "from-a-again".into();
        }
        let (_, result) = restore(&mut to_b, first).await;
        let Some(pb::restore_result::Outcome::Success(success)) = result.outcome else {
            panic!("the retry failed: {result:?}");
        };
        assert_eq!(
            success.archive.map(|d| d.sha256),
            Some(header_of(&data).sha256)
        );
        assert_eq!(b.engine.restores.load(Ordering::SeqCst), 1);
    }
}
