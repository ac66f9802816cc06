//! What the runtime's verbose status says about a container: the parts of the
//! `info` JSON (containerd and CRI-O) and of the OCI runtime spec inside it
//! that the agent reads.
//!
//! Both runtimes answer a verbose `ContainerStatus` with one key, `info`,
//! holding a JSON object:
//!
//! | field | containerd 2.x | CRI-O |
//! |---|---|---|
//! | `pid` | host PID of the container's init | the same |
//! | `sandboxID` | the pod sandbox | the same |
//! | `runtimeSpec` | the OCI spec written to the bundle's `config.json` | the OCI spec it gave the OCI runtime |
//! | others | `removing`, `snapshotKey`, `snapshotter`, `runtimeType`, `runtimeOptions`, `config` | `privileged`; `checkpointedAt`, `restored` when checkpoint/restore is on |
//!
//! The differences that matter to a restore:
//! - `root.path`: containerd writes `rootfs`, relative to the bundle
//!   (`<state>/io.containerd.runtime.v2.task/<namespace>/<id>`), which the
//!   status does not name; CRI-O writes the absolute path of the mounted
//!   storage layer (`/var/lib/containers/storage/overlay/<layer>/merged`).
//! - The namespace list: containerd lists `pid, ipc, uts, mount, network`
//!   and points the shared ones at the sandbox process
//!   (`/proc/<sandbox pid>/ns/{ipc,uts,net}`, and `pid` with
//!   `shareProcessNamespace`); CRI-O lists `pid, network, ipc, uts, mount`
//!   (plus `cgroup` on cgroup v2), pointing at files its `pinns` helper
//!   pinned under `/var/run/{netns,ipcns,utsns,userns}/`, and the pid
//!   namespace at the infra process (`/proc/<pid>/ns/pid`) when shared. A
//!   namespace of the host (`hostNetwork`, `hostIPC`, `hostPID`) is absent
//!   from both lists.
//! - `linux.cgroupsPath`: `/kubepods/.../pod<uid>/<id>` with the cgroupfs driver,
//!   `<slice>:cri-containerd:<id>` or `<slice>:crio:<id>` with systemd.
//!
//! The sandbox's verbose status carries `pid` (the pause process) in
//! containerd; the agent reads only that from it.

use std::collections::HashMap;

use serde::Deserialize;

/// The key of the verbose JSON in both runtimes' `info` maps.
pub const INFO_KEY: &str = "info";

/// Which runtime wrote a verbose `info` document, told from its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// containerd's CRI plugin (`snapshotter`, `runtimeType`, ...).
    Containerd,
    /// CRI-O (`privileged` without containerd's fields).
    Crio,
    /// Neither shape: only the common fields are used.
    Unknown,
}

/// The verbose `info` of a container, as far as the agent reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// Which runtime wrote it.
    pub flavor: Flavor,
    /// The pod sandbox's ID.
    pub sandbox_id: Option<String>,
    /// The host PID of the container's init; `None` when absent or not
    /// positive (a stopped container).
    pub pid: Option<i32>,
    /// The OCI runtime spec the runtime gave runc.
    pub spec: Option<OciSpec>,
}

/// The verbose `info` of a pod sandbox, as far as the agent reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    /// The host PID of the sandbox's process (containerd's pause), if any.
    pub pid: Option<i32>,
}

/// The subset of an OCI runtime spec (`config.json`) the agent reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OciSpec {
    /// The root file system.
    #[serde(default)]
    pub root: Option<OciRoot>,
    /// The mounts, in the order runc performs them.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Linux specifics.
    #[serde(default)]
    pub linux: Option<OciLinux>,
}

/// `root` of an OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OciRoot {
    /// The root file system; relative paths are relative to the bundle.
    #[serde(default)]
    pub path: String,
    /// Mounted read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// One mount of an OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Mount {
    /// Where it appears in the container.
    pub destination: String,
    /// The file system type (`bind`, `proc`, `tmpfs`, ...); may be empty.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The source: a host path for bind mounts.
    #[serde(default)]
    pub source: String,
    /// Mount options (`rbind`, `ro`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

impl Mount {
    /// Whether runc performs this mount as a bind mount (its spec converter:
    /// type `bind`, or an empty or `none` type with a `bind`/`rbind` option).
    pub fn is_bind(&self) -> bool {
        self.kind == "bind"
            || ((self.kind.is_empty() || self.kind == "none")
                && self.options.iter().any(|o| o == "bind" || o == "rbind"))
    }
}

/// `linux` of an OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OciLinux {
    /// The namespaces, in the order the runtime listed them.
    #[serde(default)]
    pub namespaces: Vec<OciNamespace>,
    /// The cgroup the runtime asked runc to use.
    #[serde(rename = "cgroupsPath", default)]
    pub cgroups_path: Option<String>,
}

/// One entry of `linux.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OciNamespace {
    /// The OCI type (`network`, `pid`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// An existing namespace to join; absent means a new one.
    #[serde(default)]
    pub path: Option<String>,
}

impl OciSpec {
    /// The namespace entries, in the runtime's order.
    pub fn namespaces(&self) -> &[OciNamespace] {
        self.linux.as_ref().map_or(&[], |l| l.namespaces.as_slice())
    }

    /// `linux.cgroupsPath`, if set and not empty.
    pub fn cgroups_path(&self) -> Option<&str> {
        self.linux
            .as_ref()
            .and_then(|l| l.cgroups_path.as_deref())
            .filter(|p| !p.is_empty())
    }
}

/// A verbose `info` document that is not what either runtime writes.
#[derive(Debug, thiserror::Error)]
#[error("the runtime's verbose {what} info is not valid: {source}")]
pub struct InfoError {
    /// `container` or `sandbox`.
    pub what: &'static str,
    /// The JSON error.
    #[source]
    pub source: serde_json::Error,
}

#[derive(Deserialize)]
struct RawInfo {
    #[serde(rename = "sandboxID", default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    pid: Option<i64>,
    #[serde(rename = "runtimeSpec", default)]
    runtime_spec: Option<OciSpec>,
    #[serde(default)]
    snapshotter: Option<serde_json::Value>,
    #[serde(rename = "runtimeType", default)]
    runtime_type: Option<serde_json::Value>,
    #[serde(default)]
    privileged: Option<serde_json::Value>,
}

fn positive_pid(pid: Option<i64>) -> Option<i32> {
    pid.filter(|p| *p > 0).and_then(|p| i32::try_from(p).ok())
}

/// Reads a container's verbose `info` map. A map without the `info` key
/// (a runtime that says nothing) gives an empty [`ContainerInfo`], so that
/// the caller falls back to `/proc`.
pub fn parse_container_info(info: &HashMap<String, String>) -> Result<ContainerInfo, InfoError> {
    let Some(json) = info.get(INFO_KEY) else {
        return Ok(ContainerInfo {
            flavor: Flavor::Unknown,
            sandbox_id: None,
            pid: None,
            spec: None,
        });
    };
    let raw: RawInfo = serde_json::from_str(json).map_err(|source| InfoError {
        what: "container",
        source,
    })?;
    let flavor = if raw.snapshotter.is_some() || raw.runtime_type.is_some() {
        Flavor::Containerd
    } else if raw.privileged.is_some() {
        Flavor::Crio
    } else {
        Flavor::Unknown
    };
    Ok(ContainerInfo {
        flavor,
        sandbox_id: raw.sandbox_id.filter(|s| !s.is_empty()),
        pid: positive_pid(raw.pid),
        spec: raw.runtime_spec,
    })
}

/// Reads a sandbox's verbose `info` map (only its `pid`).
pub fn parse_sandbox_info(info: &HashMap<String, String>) -> Result<SandboxInfo, InfoError> {
    let Some(json) = info.get(INFO_KEY) else {
        return Ok(SandboxInfo { pid: None });
    };
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        pid: Option<i64>,
    }
    let raw: Raw = serde_json::from_str(json).map_err(|source| InfoError {
        what: "sandbox",
        source,
    })?;
    Ok(SandboxInfo {
        pid: positive_pid(raw.pid),
    })
}

/// Reads an OCI bundle's `config.json`.
pub fn parse_spec(json: &[u8]) -> Result<OciSpec, serde_json::Error> {
    serde_json::from_slice(json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(json: &str) -> HashMap<String, String> {
        HashMap::from([(INFO_KEY.to_owned(), json.to_owned())])
    }

    fn ns(list: &[OciNamespace]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|n| (n.kind.clone(), n.path.clone()))
            .collect()
    }

    fn pair(kind: &str, path: Option<&str>) -> (String, Option<String>) {
        (kind.to_owned(), path.map(str::to_owned))
    }

    #[test]
    fn containerd_container() {
        let got = parse_container_info(&info(include_str!("testdata/containerd-container.json")))
            .unwrap();
        assert_eq!(got.flavor, Flavor::Containerd);
        assert_eq!(got.pid, Some(18502));
        assert_eq!(
            got.sandbox_id.as_deref(),
            Some("f01659133097e92f9ab8f56479347424be4c3c8764b06f5170747908c82e5545")
        );
        let spec = got.spec.unwrap();
        assert_eq!(
            spec.root,
            Some(OciRoot {
                path: "rootfs".into(),
                readonly: false
            })
        );
        assert_eq!(
            ns(spec.namespaces()),
            vec![
                pair("pid", None),
                pair("ipc", Some("/proc/18479/ns/ipc")),
                pair("uts", Some("/proc/18479/ns/uts")),
                pair("mount", None),
                pair("network", Some("/proc/18479/ns/net")),
            ]
        );
        assert_eq!(
            spec.cgroups_path(),
            Some(
                "/podrestore-e2e-a/kubepods/besteffort/pode84dd63e-d437-483e-b9d0-66afa4da770d/b3665d779a897a8564cf7bb1d0098f67b66c899aaeda5965a1aabca3e61d6641"
            )
        );
        let data = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/data")
            .unwrap();
        assert!(data.is_bind());
        assert!(
            data.source
                .ends_with("/volumes/kubernetes.io~empty-dir/data")
        );
        assert_eq!(data.options, ["rbind", "rprivate", "rw"]);
    }

    #[test]
    fn containerd_container_with_shared_pid_namespace() {
        let got = parse_container_info(&info(include_str!(
            "testdata/containerd-container-shared-pid.json"
        )))
        .unwrap();
        assert_eq!(
            ns(got.spec.unwrap().namespaces()),
            vec![
                pair("pid", Some("/proc/18392/ns/pid")),
                pair("ipc", Some("/proc/18392/ns/ipc")),
                pair("uts", Some("/proc/18392/ns/uts")),
                pair("mount", None),
                pair("network", Some("/proc/18392/ns/net")),
            ]
        );
    }

    #[test]
    fn crio_container() {
        let got =
            parse_container_info(&info(include_str!("testdata/crio-container.json"))).unwrap();
        assert_eq!(got.flavor, Flavor::Crio);
        assert_eq!(got.pid, Some(4242));
        let spec = got.spec.unwrap();
        assert!(spec.root.as_ref().unwrap().path.starts_with('/'));
        assert_eq!(
            ns(spec.namespaces()),
            vec![
                pair("pid", None),
                pair(
                    "network",
                    Some("/var/run/netns/3c1a5e7b-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
                ),
                pair(
                    "ipc",
                    Some("/var/run/ipcns/3c1a5e7b-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
                ),
                pair(
                    "uts",
                    Some("/var/run/utsns/3c1a5e7b-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
                ),
                pair("mount", None),
                pair("cgroup", None),
            ]
        );
        assert!(
            spec.cgroups_path().unwrap().ends_with(
                ":crio:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
            )
        );
    }

    #[test]
    fn containerd_sandbox_pid() {
        let got =
            parse_sandbox_info(&info(include_str!("testdata/containerd-sandbox.json"))).unwrap();
        assert_eq!(got.pid, Some(18479));
    }

    #[test]
    fn sparse_and_broken_documents() {
        let empty = parse_container_info(&HashMap::new()).unwrap();
        assert_eq!(empty.flavor, Flavor::Unknown);
        assert_eq!((empty.pid, empty.spec), (None, None));

        let stopped = parse_container_info(&info(r#"{"pid":0,"sandboxID":""}"#)).unwrap();
        assert_eq!((stopped.pid, stopped.sandbox_id), (None, None));

        let err = parse_container_info(&info("{")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the runtime's verbose container info is not valid: "),
            "{err}"
        );
        assert_eq!(parse_sandbox_info(&HashMap::new()).unwrap().pid, None);
    }

    #[test]
    fn bind_mounts_as_runc_sees_them() {
        let cases = [
            ("bind", &[][..], true),
            ("", &["rbind", "ro"][..], true),
            ("none", &["bind"][..], true),
            ("tmpfs", &["bind"][..], false),
            ("proc", &[][..], false),
            ("", &["ro"][..], false),
        ];
        for (kind, options, want) in cases {
            let m = Mount {
                destination: "/x".into(),
                kind: kind.into(),
                source: "/y".into(),
                options: options.iter().map(|s| s.to_string()).collect(),
            };
            assert_eq!(m.is_bind(), want, "{kind} {options:?}");
        }
    }
}
