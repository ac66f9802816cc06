//! The PodRestore API, the operator and the agent's service on the local cluster: the API
//! server enforces the schema and CEL rules; the operator (a host process with the admin
//! kubeconfig) elects a leader, issues the mutual-TLS certificates, and reports every
//! refusal as a condition; the agent (`podrestore-agent serve`, a host process) answers it
//! over mutual TLS and keeps nothing for a refused request.
//!
//! The operator and agent binaries come from the cargo target directory the tests were
//! built in (`cargo build -p podrestore-operator -p podrestore-agent` first), or from
//! `PODRESTORE_OPERATOR_BIN` / `PODRESTORE_AGENT_BIN`.

use std::{fs::File, net::SocketAddr, process::Command, time::Duration};

use anyhow::{Context, Result};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
    events::v1::Event,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, ListParams, PostParams},
};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster, cluster,
    install::{
        AgentPlace, CONDITION, Installation, Process, binary, free_port, install, install_crd,
        operator_args, podrestore, podrestores,
    },
    pods::start_pod,
    wait_until,
};
use serde_json::{Value, json};

fn valid_spec(node: &str, path: &str, pod: &str) -> Value {
    json!({
        "checkpoint": {"archive": {"nodeName": node, "path": path}},
        "target": {"podName": pod},
    })
}

/// Waits until condition `type_` of PodRestore `name` has `status` and `reason`; returns
/// its message.
async fn condition(
    api: &Api<DynamicObject>,
    name: &str,
    expected: (&str, &str, &str),
    logs: &str,
) -> Result<String> {
    podrestore_e2e::install::condition(api, name, expected, CONDITION, || logs.to_owned()).await
}

/// The operator and an agent (a host process) for one namespace.
async fn setup(cluster: &Cluster, client: &kube::Client, prefix: &str) -> Result<Installation> {
    install(cluster, client, prefix, AgentPlace::Host).await
}

/// What the API server answers to creating `spec`: `Ok` or the error message.
async fn create(api: &Api<DynamicObject>, ns: &str, name: &str, spec: Value) -> Result<(), String> {
    let object = podrestore(ns, name, spec).map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|err| err.to_string())
}

#[tokio::test]
async fn the_api_server_rejects_bad_specs_and_spec_changes() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    install_crd(&cluster)?;
    let ns = cluster.namespace("pr-schema")?;
    let api = podrestores(&client, &ns.name);
    let path = "/var/lib/kubelet/checkpoints/checkpoint-counter_default-counter-2026.tar";

    let with = |f: &dyn Fn(&mut Value)| {
        let mut spec = valid_spec("a", path, "forensic");
        f(&mut spec);
        spec
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "relative path",
            with(&|s| s["checkpoint"]["archive"]["path"] = json!("checkpoints/c.tar")),
            "path must be absolute",
        ),
        (
            "dot-dot path",
            with(&|s| {
                s["checkpoint"]["archive"]["path"] =
                    json!("/var/lib/kubelet/checkpoints/../../../etc/shadow")
            }),
            "path must not contain '..' segments",
        ),
        (
            "no source",
            with(&|s| s["checkpoint"] = json!({})),
            "exactly one checkpoint source must be set",
        ),
        (
            "no node",
            with(&|s| s["checkpoint"]["archive"] = json!({"path": path})),
            "spec.checkpoint.archive.nodeName: Required value",
        ),
        (
            "bad node name",
            with(&|s| s["checkpoint"]["archive"]["nodeName"] = json!("Node_A")),
            "spec.checkpoint.archive.nodeName: Invalid value",
        ),
        (
            "no target",
            with(&|s| {
                s.as_object_mut().map(|o| o.remove("target"));
            }),
            "spec.target: Required value",
        ),
        (
            "bad container",
            with(&|s| s["target"]["container"] = json!("Main")),
            "spec.target.container: Invalid value",
        ),
        (
            "lower-case enum",
            with(&|s| s["options"] = json!({"networkLock": "iptables"})),
            "Unsupported value: \"iptables\"",
        ),
        (
            "unknown cgroup mode",
            with(&|s| s["options"] = json!({"manageCgroupsMode": "Partial"})),
            "Unsupported value: \"Partial\"",
        ),
        (
            "timeout zero",
            with(&|s| s["options"] = json!({"timeoutSeconds": 0})),
            "greater than or equal to 1",
        ),
        (
            "timeout too long",
            with(&|s| s["options"] = json!({"timeoutSeconds": 3601})),
            "less than or equal to 3600",
        ),
    ];
    for (i, (case, spec, want)) in cases.into_iter().enumerate() {
        let got = create(&api, &ns.name, &format!("bad-{i}"), spec).await;
        match got {
            Err(message) => assert!(message.contains(want), "{case}: want {want:?} in {message}"),
            Ok(()) => panic!("{case}: the API server accepted it"),
        }
    }

    // A valid spec is accepted, with the documented defaults filled in.
    create(&api, &ns.name, "good", valid_spec("a", path, "forensic"))
        .await
        .map_err(anyhow::Error::msg)?;
    let good = api.get("good").await?;
    assert_eq!(
        good.data["spec"]["options"],
        json!({
            "tcpEstablished": false, "fileLocks": false, "shellJob": false, "extUnixSk": false,
            "manageCgroupsMode": "Soft", "networkLock": "Iptables", "timeoutSeconds": 300,
        })
    );

    // The spec cannot change after creation.
    let mut changed = good.clone();
    changed.data["spec"]["checkpoint"]["archive"]["path"] =
        json!("/var/lib/kubelet/checkpoints/other.tar");
    let err = api
        .replace("good", &PostParams::default(), &changed)
        .await
        .expect_err("spec change accepted");
    assert!(err.to_string().contains("spec is immutable"), "{err}");

    // `kubectl explain` shows the documentation written on the types.
    let explained = cluster.kubectl(&["explain", "podrestore.spec.options"])?;
    assert!(explained.contains("timeoutSeconds"), "{explained}");
    assert!(explained.contains("Default: 300"), "{explained}");
    let columns = cluster.kubectl(&["get", "podrestores", "-n", &ns.name])?;
    for column in ["TARGET", "NODE", "RESTORED", "REASON", "PID"] {
        assert!(columns.contains(column), "{columns}");
    }
    Ok(())
}

#[tokio::test]
async fn refused_requests_end_in_a_condition_and_leave_the_node_untouched() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = setup(&cluster, &client, "pr-refuse").await?;
    let ns = setup.ns.name.clone();
    let api = podrestores(&client, &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "forensic", "exec sleep 3600").await?;
    let missing = setup.checkpoints.join("missing.tar");
    let missing = missing.to_str().context("path is not UTF-8")?;

    let cases = [
        (
            "no-pod",
            valid_spec(&cluster.node, missing, "nope"),
            reason::TARGET_POD_NOT_FOUND,
            "does not exist",
        ),
        (
            "other-node",
            valid_spec("elsewhere", missing, "forensic"),
            reason::ARCHIVE_NODE_NOT_FOUND,
            "node elsewhere",
        ),
        // These two are answered by the agent, over mutual TLS.
        (
            "outside",
            valid_spec(&cluster.node, "/etc/hostname", "forensic"),
            reason::ARCHIVE_REJECTED,
            "outside the checkpoint directories",
        ),
        (
            "no-archive",
            valid_spec(&cluster.node, missing, "forensic"),
            reason::ARCHIVE_NOT_FOUND,
            "no checkpoint archive",
        ),
    ];
    for (name, spec, _, _) in &cases {
        create(&api, &ns, name, spec.clone())
            .await
            .map_err(anyhow::Error::msg)?;
    }
    for (name, _, want_reason, want_message) in &cases {
        let message = condition(
            &api,
            name,
            (kind::ACCEPTED, "False", want_reason),
            &setup.logs(),
        )
        .await?;
        assert!(message.contains(want_message), "{name}: {message}");
        condition(
            &api,
            name,
            (kind::RESTORED, "False", reason::NOT_ACCEPTED),
            &setup.logs(),
        )
        .await?;
        let object = api.get(name).await?;
        assert!(
            object.data["status"]["startTime"].is_null(),
            "{name} started"
        );
        assert_eq!(object.data["status"]["observedGeneration"], json!(1));
    }

    // The user sees why, as events on the PodRestore.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let list = events.list(&ListParams::default()).await?;
    let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
    for (_, _, want_reason, _) in &cases {
        assert!(
            reasons.iter().any(|r| r == want_reason),
            "no {want_reason} event in {reasons:?}"
        );
    }

    // Nothing was recorded or created on the node for any of them.
    for sub in ["restores", "work"] {
        let entries = std::fs::read_dir(setup.state().join(sub))
            .with_context(|| setup.logs())?
            .count();
        assert_eq!(entries, 0, "agent {sub} is not empty");
    }

    // Deleting them does not wait for anything: no agent was asked to restore.
    for (name, _, _, _) in &cases {
        api.delete(name, &DeleteParams::default()).await?;
    }
    wait_until("the PodRestores to be gone", CONDITION, || async {
        let left = api.list(&ListParams::default()).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await
    .with_context(|| setup.logs())?;
    Ok(())
}

#[tokio::test]
async fn the_operator_issues_certificates_naming_the_nodes() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = setup(&cluster, &client, "pr-certs").await?;
    let tls = setup.dir.path().join("tls");
    let cert = std::fs::read_to_string(tls.join("tls.crt"))?;
    let ca = std::fs::read_to_string(tls.join("ca.crt"))?;
    // openssl is in the base system; it reads what a third party would see.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage"])
        .stdin(File::open(tls.join("tls.crt"))?)
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("DNS:podrestore-agent.{}", cluster.node)),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(tls.join("ca.crt"))
        .arg(tls.join("tls.crt"))
        .output()?;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(!cert.is_empty() && !ca.is_empty());

    // The CA lives in its own Secret; its key never goes to the agents.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &setup.ns.name);
    let ca_secret = secrets.get("podrestore-ca").await?;
    assert!(ca_secret.data.unwrap_or_default().contains_key("ca.key"));
    let agent_secret = secrets.get("podrestore-agent-tls").await?;
    assert_eq!(agent_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(!agent_secret.data.unwrap_or_default().contains_key("ca.key"));

    // A lost agents' Secret is issued again, from the same CA, at the next check.
    secrets
        .delete("podrestore-agent-tls", &DeleteParams::default())
        .await?;
    let reissued = wait_until("the agents' Secret to be reissued", CONDITION, || async {
        Ok(secrets.get_opt("podrestore-agent-tls").await?)
    })
    .await
    .with_context(|| setup.logs())?;
    let data = reissued.data.unwrap_or_default();
    let new_cert = data.get("tls.crt").context("no tls.crt")?;
    assert_ne!(new_cert.0, cert.as_bytes(), "a new key pair");
    assert_eq!(
        data.get("ca.crt").map(|b| b.0.as_slice()),
        Some(ca.as_bytes())
    );
    Ok(())
}

async fn lease_holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt("podrestore-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

#[tokio::test]
async fn one_operator_replica_leads_and_a_standby_takes_over() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    install_crd(&cluster)?;
    let ns = cluster.namespace("pr-leader")?;
    let dir = tempfile::tempdir()?;
    let agent: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let program = binary("podrestore-operator", "PODRESTORE_OPERATOR_BIN")?;
    let mut replicas = Vec::new();
    for identity in ["op-1", "op-2"] {
        replicas.push(Process::spawn(
            identity,
            &program,
            &operator_args(&ns.name, identity, &cluster.node, agent)?,
            &cluster.kubeconfig,
            dir.path(),
        )?);
    }
    let logs = |replicas: &[Process]| {
        replicas
            .iter()
            .map(Process::tail)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let first = wait_until("a leader", CONDITION, || async {
        lease_holder(&leases).await
    })
    .await
    .with_context(|| logs(&replicas))?;
    // It stays the leader while it renews.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        lease_holder(&leases).await?.as_deref(),
        Some(first.as_str())
    );

    // Kill the leader without a chance to release: the standby takes over once the Lease
    // went unrenewed for its duration.
    let (leader, standby): (Vec<Process>, Vec<Process>) =
        replicas.into_iter().partition(|p| p.name == first);
    drop(leader);
    let second = wait_until("the standby to lead", Duration::from_secs(40), || async {
        Ok(lease_holder(&leases).await?.filter(|h| *h != first))
    })
    .await
    .with_context(|| logs(&standby))?;
    assert_eq!(
        Some(second.as_str()),
        standby.first().map(|p| p.name.as_str())
    );

    // A leader that shuts down gives the Lease up at once.
    let mut standby = standby;
    let last = standby.first_mut().context("no standby")?;
    last.signal("TERM")?;
    last.exited(Duration::from_secs(20)).await?;
    assert_eq!(lease_holder(&leases).await?, None, "{}", last.tail());
    Ok(())
}
