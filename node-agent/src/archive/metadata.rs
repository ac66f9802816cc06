//! The metadata files of a checkpoint archive: `config.dump`, `spec.dump`,
//! `checkpoint/descriptors.json`, `deleted.files` and the CRIU version.
//!
//! Parsing is pure (bytes in, values out) so the same code serves an archive
//! read in memory by `inspect` and one extracted to disk for a restore. Only
//! the fields the agent uses are modelled; unknown fields are ignored, wrong
//! types of known fields are errors. Nothing here is trusted for paths: see
//! [`super::policy`] for what a restore may take from `spec.dump`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::limits::Limits;

/// File names inside a checkpoint archive (checkpointctl's `lib/metadata.go`).
pub mod names {
    /// CRIU's image directory.
    pub const CHECKPOINT_DIR: &str = "checkpoint";
    /// The container's metadata (`ContainerConfig`).
    pub const CONFIG_DUMP: &str = "config.dump";
    /// The container's OCI runtime spec.
    pub const SPEC_DUMP: &str = "spec.dump";
    /// The container's writable layer.
    pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
    /// Files deleted from the container's image (CRI-O, Podman).
    pub const DELETED_FILES: &str = "deleted.files";
    /// CRIU's dump log.
    pub const DUMP_LOG: &str = "dump.log";
    /// CRIU's dump statistics.
    pub const STATS_DUMP: &str = "stats-dump";
    /// What fds 0, 1 and 2 of the init process were, written by runc and
    /// crun into the image directory.
    pub const DESCRIPTORS: &str = "checkpoint/descriptors.json";
}

/// Why metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A required file is absent.
    #[error("{file} is missing from the checkpoint")]
    Missing {
        /// The file.
        file: String,
    },
    /// A file is not the JSON it should be.
    #[error("{file} is not valid: {source}")]
    Json {
        /// The file.
        file: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A file is larger than its cap.
    #[error("{file} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A CRIU image does not decode.
    #[error("CRIU image {file} is malformed: {reason}")]
    Image {
        /// The image file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading a file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// `config.dump`: the container as the runtime described it when it was
/// checkpointed (checkpointctl's `ContainerConfig`, which containerd and
/// CRI-O fill).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// The container's id in its runtime.
    #[serde(default)]
    pub id: String,
    /// The container's name in its runtime.
    #[serde(default)]
    pub name: String,
    /// The image id the container was created from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_image: String,
    /// The image reference (digest) the container was created from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_image_ref: String,
    /// The image name the container was created from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_image_name: String,
    /// The OCI runtime (`runc`, `crun`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// When the container was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// When it was checkpointed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpointed_time: Option<String>,
    /// When it was restored, for a checkpoint of a restored container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_time: Option<String>,
    /// Whether the checkpointed container had itself been restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
}

/// The subset of the OCI runtime spec (`spec.dump`) the agent reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SpecDump {
    /// OCI spec version.
    #[serde(default, rename = "ociVersion")]
    pub oci_version: String,
    /// Annotations: where the runtimes record pod and container identity.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The container's init process.
    #[serde(default)]
    pub process: Option<SpecProcess>,
    /// The container's mounts, in order.
    #[serde(default)]
    pub mounts: Vec<SpecMount>,
    /// Linux-specific settings.
    #[serde(default)]
    pub linux: Option<SpecLinux>,
}

/// `process` of the OCI spec. The environment is only counted: it may hold
/// secrets and is restored by CRIU from the process's memory anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SpecProcess {
    /// Command line.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: String,
    /// Number of environment variables.
    #[serde(
        default,
        rename(deserialize = "env", serialize = "envCount"),
        deserialize_with = "count_strings"
    )]
    pub env_count: usize,
    /// Whether the process had a terminal.
    #[serde(default)]
    pub terminal: bool,
}

/// One entry of `mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SpecMount {
    /// Where it is mounted in the container.
    pub destination: String,
    /// File system type (`bind`, `proc`, `tmpfs`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Source on the checkpointed node. Informational only.
    #[serde(default)]
    pub source: Option<String>,
    /// Mount options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// `linux` of the OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SpecLinux {
    /// Namespaces, in the order the runtime listed them.
    #[serde(default)]
    pub namespaces: Vec<SpecNamespace>,
    /// Device nodes created in the container.
    #[serde(default)]
    pub devices: Vec<SpecDevice>,
    /// Resource settings; only the device cgroup rules matter here.
    #[serde(default)]
    pub resources: Option<SpecResources>,
}

/// One entry of `linux.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SpecNamespace {
    /// OCI namespace type (`network`, `pid`, `ipc`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Path of the namespace joined, on the checkpointed node. Never used by
    /// a restore, whose namespaces come from the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One entry of `linux.devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SpecDevice {
    /// Path in the container.
    pub path: String,
    /// `c`, `b`, `u` or `p`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Major number.
    #[serde(default)]
    pub major: i64,
    /// Minor number.
    #[serde(default)]
    pub minor: i64,
}

/// `linux.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SpecResources {
    /// Device cgroup rules.
    #[serde(default)]
    pub devices: Vec<SpecDeviceRule>,
}

/// One device cgroup rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SpecDeviceRule {
    /// Allow or deny.
    #[serde(default)]
    pub allow: bool,
    /// `a`, `c` or `b`; absent means all.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Major number; absent means all.
    #[serde(default)]
    pub major: Option<i64>,
    /// Minor number; absent means all.
    #[serde(default)]
    pub minor: Option<i64>,
    /// `r`, `w`, `m` combination.
    #[serde(default)]
    pub access: Option<String>,
}

/// Counts a JSON array of strings without keeping them.
fn count_strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    struct Counter;
    impl<'de> serde::de::Visitor<'de> for Counter {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of strings")
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    deserializer.deserialize_any(Counter)
}

/// The runtime that wrote the checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// containerd's CRI plugin.
    Containerd,
    /// CRI-O.
    #[serde(rename = "cri-o")]
    CriO,
    /// Podman.
    Podman,
    /// Not recognised.
    #[default]
    Unknown,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Containerd => "containerd",
            Self::CriO => "CRI-O",
            Self::Podman => "Podman",
            Self::Unknown => "unknown",
        })
    }
}

/// Which pod and container the checkpoint came from, from `spec.dump`'s
/// annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentity {
    /// The runtime that wrote the annotations.
    pub engine: Engine,
    /// Pod name.
    pub pod_name: Option<String>,
    /// Pod namespace.
    pub pod_namespace: Option<String>,
    /// Pod UID.
    pub pod_uid: Option<String>,
    /// Container name in the pod.
    pub container_name: Option<String>,
}

/// Annotation keys (containerd's `internal/cri/annotations`, CRI-O's
/// `pkg/annotations`, checkpointctl's `lib/annotations.go`).
pub mod keys {
    /// Set by CRI-O (`cri-o`) and Podman (`libpod`).
    pub const CONTAINER_MANAGER: &str = "io.container.manager";
    /// containerd: pod name.
    pub const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    /// containerd: pod namespace.
    pub const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    /// containerd: pod UID.
    pub const CRI_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    /// containerd: container name.
    pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    /// CRI-O: pod name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// CRI-O: pod namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// CRI-O: pod UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// Kubernetes container-name label.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// CRI-O: the kube labels, as a JSON object.
    pub const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";
    /// CRI-O: container metadata, as a JSON object with `name`.
    pub const CRIO_METADATA: &str = "io.kubernetes.cri-o.Metadata";
    /// checkpointctl / checkpoint images: pod name.
    pub const CHECKPOINT_POD_NAME: &str = "org.criu.checkpoint.pod.name";
    /// checkpointctl / checkpoint images: pod namespace.
    pub const CHECKPOINT_POD_NAMESPACE: &str = "org.criu.checkpoint.pod.namespace";
    /// checkpointctl / checkpoint images: pod UID.
    pub const CHECKPOINT_POD_UID: &str = "org.criu.checkpoint.pod.uid";
    /// checkpointctl / checkpoint images: container name.
    pub const CHECKPOINT_CONTAINER_NAME: &str = "org.criu.checkpoint.container.name";
    /// checkpointctl / checkpoint images: CRIU version.
    pub const CHECKPOINT_CRIU_VERSION: &str = "org.criu.checkpoint.criu.version";
    /// CRI-O checkpoint images: CRIU version.
    pub const CRIO_CHECKPOINT_CRIU_VERSION: &str =
        "io.kubernetes.cri-o.annotations.checkpoint.criu.version";
}

impl SpecDump {
    /// Pod and container identity, from whichever runtime's keys are present
    /// (checkpointctl reads them the same way), then the generic
    /// `org.criu.checkpoint.*` keys.
    pub fn identity(&self) -> PodIdentity {
        let a = &self.annotations;
        let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
        let generic = PodIdentity {
            engine: Engine::Unknown,
            pod_name: get(keys::CHECKPOINT_POD_NAME),
            pod_namespace: get(keys::CHECKPOINT_POD_NAMESPACE),
            pod_uid: get(keys::CHECKPOINT_POD_UID),
            container_name: get(keys::CHECKPOINT_CONTAINER_NAME),
        };
        let found = match a.get(keys::CONTAINER_MANAGER).map(String::as_str) {
            Some("cri-o") => {
                let labels: BTreeMap<String, String> = a
                    .get(keys::CRIO_LABELS)
                    .and_then(|l| serde_json::from_str(l).ok())
                    .unwrap_or_default();
                let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
                #[derive(Deserialize)]
                struct CrioMetadata {
                    #[serde(default)]
                    name: String,
                }
                let meta_name = a
                    .get(keys::CRIO_METADATA)
                    .and_then(|m| serde_json::from_str::<CrioMetadata>(m).ok())
                    .map(|m| m.name)
                    .filter(|n| !n.is_empty());
                PodIdentity {
                    engine: Engine::CriO,
                    pod_name: get(keys::POD_NAME).or_else(|| label(keys::POD_NAME)),
                    pod_namespace: get(keys::POD_NAMESPACE).or_else(|| label(keys::POD_NAMESPACE)),
                    pod_uid: get(keys::POD_UID).or_else(|| label(keys::POD_UID)),
                    container_name: meta_name.or_else(|| label(keys::CONTAINER_NAME)),
                }
            }
            Some("libpod") => PodIdentity {
                engine: Engine::Podman,
                ..PodIdentity::default()
            },
            _ if a.keys().any(|k| k.starts_with("io.kubernetes.cri.")) => PodIdentity {
                engine: Engine::Containerd,
                pod_name: get(keys::CRI_SANDBOX_NAME),
                pod_namespace: get(keys::CRI_SANDBOX_NAMESPACE),
                pod_uid: get(keys::CRI_SANDBOX_UID),
                container_name: get(keys::CRI_CONTAINER_NAME),
            },
            _ => PodIdentity::default(),
        };
        PodIdentity {
            engine: found.engine,
            pod_name: found.pod_name.or(generic.pod_name),
            pod_namespace: found.pod_namespace.or(generic.pod_namespace),
            pod_uid: found.pod_uid.or(generic.pod_uid),
            container_name: found.container_name.or(generic.container_name),
        }
    }

    /// The CRIU version recorded in the annotations, if any.
    pub fn criu_version(&self) -> Option<String> {
        [
            keys::CHECKPOINT_CRIU_VERSION,
            keys::CRIO_CHECKPOINT_CRIU_VERSION,
        ]
        .iter()
        .find_map(|k| self.annotations.get(*k).filter(|v| !v.is_empty()).cloned())
    }

    /// Namespaces listed in the spec (types and source-node paths).
    pub fn namespaces(&self) -> &[SpecNamespace] {
        self.linux.as_ref().map_or(&[], |l| l.namespaces.as_slice())
    }
}

/// Parses `config.dump`.
pub fn parse_config(bytes: &[u8]) -> Result<ContainerConfig, MetadataError> {
    parse_json(names::CONFIG_DUMP, bytes)
}

/// Parses `spec.dump`.
pub fn parse_spec(bytes: &[u8]) -> Result<SpecDump, MetadataError> {
    parse_json(names::SPEC_DUMP, bytes)
}

/// Parses `checkpoint/descriptors.json`: what fds 0, 1, 2 of the
/// checkpointed init process were (e.g. `/dev/null`, `pipe:[1234]`).
pub fn parse_descriptors(bytes: &[u8]) -> Result<Vec<String>, MetadataError> {
    parse_json(names::DESCRIPTORS, bytes)
}

/// Parses `deleted.files`: paths, relative to the container root, that the
/// checkpointed container had deleted from its image.
pub fn parse_deleted_files(bytes: &[u8]) -> Result<Vec<String>, MetadataError> {
    parse_json(names::DELETED_FILES, bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    file: &str,
    bytes: &[u8],
) -> Result<T, MetadataError> {
    serde_json::from_slice(bytes).map_err(|source| MetadataError::Json {
        file: file.to_string(),
        source,
    })
}

/// Finds CRIU's version in the head of its log: CRIU starts every log with
/// a `Version: X.Y.Z (gitid ...)` line.
pub fn criu_version_from_log(log: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(log);
    text.lines().find_map(|line| {
        let (_, rest) = line.split_once("Version: ")?;
        let version = rest.split_whitespace().next()?;
        let valid = !version.is_empty()
            && version.len() <= 64
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
        valid.then(|| version.to_string())
    })
}

/// Everything a restore needs from the metadata files, read from an
/// extracted checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMetadata {
    /// `config.dump`.
    pub config: ContainerConfig,
    /// `spec.dump`.
    pub spec: SpecDump,
    /// `checkpoint/descriptors.json`, if present.
    pub descriptors: Option<Vec<String>>,
    /// `deleted.files`, if present.
    pub deleted_files: Option<Vec<String>>,
    /// CRIU version from the annotations or `dump.log`.
    pub criu_version: Option<String>,
}

/// How much of `dump.log` is read to find the version line.
pub const LOG_HEAD_BYTES: u64 = 64 * 1024;

impl CheckpointMetadata {
    /// Reads the metadata files of a checkpoint extracted into `dir`.
    /// `config.dump` and `spec.dump` are required.
    pub fn from_dir(dir: &Path, limits: &Limits) -> Result<Self, MetadataError> {
        let required = |name: &str| {
            read_capped(&dir.join(name), limits.max_metadata_bytes, name)?.ok_or_else(|| {
                MetadataError::Missing {
                    file: name.to_string(),
                }
            })
        };
        let config = parse_config(&required(names::CONFIG_DUMP)?)?;
        let spec = parse_spec(&required(names::SPEC_DUMP)?)?;
        let descriptors = read_capped(
            &dir.join(names::DESCRIPTORS),
            limits.max_metadata_bytes,
            names::DESCRIPTORS,
        )?
        .map(|b| parse_descriptors(&b))
        .transpose()?;
        let deleted_files = read_capped(
            &dir.join(names::DELETED_FILES),
            limits.max_metadata_bytes,
            names::DELETED_FILES,
        )?
        .map(|b| parse_deleted_files(&b))
        .transpose()?;
        let criu_version = match spec.criu_version() {
            Some(v) => Some(v),
            None => read_head(&dir.join(names::DUMP_LOG), LOG_HEAD_BYTES)?
                .and_then(|log| criu_version_from_log(&log)),
        };
        Ok(Self {
            config,
            spec,
            descriptors,
            deleted_files,
            criu_version,
        })
    }
}

/// Opens a file below an extracted checkpoint without following a symbolic
/// link at the last component; `None` if it does not exist.
fn open_nofollow(path: &Path) -> Result<Option<File>, MetadataError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetadataError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a whole file of at most `limit` bytes.
pub(crate) fn read_capped(
    path: &Path,
    limit: u64,
    name: &str,
) -> Result<Option<Vec<u8>>, MetadataError> {
    let Some(file) = open_nofollow(path)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|source| MetadataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if data.len() as u64 > limit {
        let size = std::fs::metadata(path).map_or(data.len() as u64, |m| m.len());
        return Err(MetadataError::TooLarge {
            file: name.to_string(),
            size,
            limit,
        });
    }
    Ok(Some(data))
}

/// Reads at most `limit` bytes from the start of a file.
fn read_head(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, MetadataError> {
    let Some(file) = open_nofollow(path)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    file.take(limit)
        .read_to_end(&mut data)
        .map_err(|source| MetadataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dump_as_containerd_writes_it() {
        let json = br#"{"id":"5b2c1f","name":"counter","rootfsImage":"sha256:abc","rootfsImageRef":"docker.io/library/busybox@sha256:def","rootfsImageName":"docker.io/library/busybox:1.36","runtime":"io.containerd.runc.v2","createdTime":"2025-01-02T03:04:05.123456789Z","checkpointedTime":"2025-01-02T04:00:00Z","somethingNew":42}"#;
        let config = parse_config(json).expect("parses");
        assert_eq!(config.id, "5b2c1f");
        assert_eq!(config.rootfs_image_name, "docker.io/library/busybox:1.36");
        assert_eq!(config.runtime, "io.containerd.runc.v2");
        assert_eq!(
            config.checkpointed_time.as_deref(),
            Some("2025-01-02T04:00:00Z")
        );
        assert!(!config.restored);
        let again = serde_json::to_vec(&config).expect("serializes");
        assert_eq!(parse_config(&again).expect("parses"), config);
    }

    #[test]
    fn spec_dump_subset_and_env_is_only_counted() {
        let json = br#"{
            "ociVersion": "1.2.0",
            "process": {"args": ["/bin/sh", "-c", "count"], "cwd": "/", "env": ["PATH=/bin", "SECRET=x"], "user": {"uid": 0, "gid": 0}},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]},
            "annotations": {"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.sandbox-namespace": "default", "io.kubernetes.cri.container-name": "app", "io.kubernetes.cri.sandbox-uid": "u-1"}
        }"#;
        let spec = parse_spec(json).expect("parses");
        let process = spec.process.clone().expect("process");
        assert_eq!(process.args, ["/bin/sh", "-c", "count"]);
        assert_eq!(process.env_count, 2);
        assert_eq!(spec.namespaces().len(), 2);
        assert_eq!(
            spec.namespaces()[1].path.as_deref(),
            Some("/var/run/netns/cni-1")
        );
        assert_eq!(
            spec.identity(),
            PodIdentity {
                engine: Engine::Containerd,
                pod_name: Some("web-0".into()),
                pod_namespace: Some("default".into()),
                pod_uid: Some("u-1".into()),
                container_name: Some("app".into()),
            }
        );
    }

    #[test]
    fn identity_table() {
        let crio_labels = r#"{"io.kubernetes.pod.name":"lbl-pod","io.kubernetes.pod.namespace":"lbl-ns","io.kubernetes.pod.uid":"lbl-uid","io.kubernetes.container.name":"lbl-c"}"#;
        let table: Vec<(Vec<(&str, &str)>, PodIdentity)> = vec![
            (
                vec![
                    ("io.container.manager", "cri-o"),
                    ("io.kubernetes.pod.name", "p"),
                    ("io.kubernetes.pod.namespace", "ns"),
                    (
                        "io.kubernetes.cri-o.Metadata",
                        r#"{"name":"c","attempt":1}"#,
                    ),
                    ("io.kubernetes.cri-o.Labels", crio_labels),
                ],
                PodIdentity {
                    engine: Engine::CriO,
                    pod_name: Some("p".into()),
                    pod_namespace: Some("ns".into()),
                    pod_uid: Some("lbl-uid".into()),
                    container_name: Some("c".into()),
                },
            ),
            (
                vec![
                    ("io.container.manager", "cri-o"),
                    ("io.kubernetes.cri-o.Labels", crio_labels),
                    ("io.kubernetes.cri-o.Metadata", "not json"),
                ],
                PodIdentity {
                    engine: Engine::CriO,
                    pod_name: Some("lbl-pod".into()),
                    pod_namespace: Some("lbl-ns".into()),
                    pod_uid: Some("lbl-uid".into()),
                    container_name: Some("lbl-c".into()),
                },
            ),
            (
                vec![("io.container.manager", "libpod")],
                PodIdentity {
                    engine: Engine::Podman,
                    ..PodIdentity::default()
                },
            ),
            (
                vec![
                    ("org.criu.checkpoint.pod.name", "gp"),
                    ("org.criu.checkpoint.pod.namespace", "gns"),
                    ("org.criu.checkpoint.container.name", "gc"),
                ],
                PodIdentity {
                    engine: Engine::Unknown,
                    pod_name: Some("gp".into()),
                    pod_namespace: Some("gns".into()),
                    pod_uid: None,
                    container_name: Some("gc".into()),
                },
            ),
            (vec![], PodIdentity::default()),
        ];
        for (annotations, want) in table {
            let spec = SpecDump {
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..SpecDump::default()
            };
            assert_eq!(spec.identity(), want, "{annotations:?}");
        }
    }

    #[test]
    fn bad_json_names_the_file() {
        let err = parse_spec(b"{\"mounts\": 7}").expect_err("wrong type");
        assert!(
            err.to_string()
                .starts_with("spec.dump is not valid: invalid type: integer `7`"),
            "{err}"
        );
        let err = parse_config(b"{").expect_err("truncated");
        assert!(
            err.to_string().starts_with("config.dump is not valid: EOF"),
            "{err}"
        );
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"annotations\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = parse_spec(deep.as_bytes()).expect_err("too deep");
        assert!(err.to_string().contains("spec.dump is not valid"), "{err}");
    }

    #[test]
    fn criu_version_from_log_table() {
        let table: [(&[u8], Option<&str>); 5] = [
            (
                b"(00.000000) Version: 4.2.1 (gitid 0)\n(00.0001) Running",
                Some("4.2.1"),
            ),
            (
                b"(00.000000) Unable to get $HOME\n(00.000010) Version: 3.19 (gitid v3.19)\n",
                Some("3.19"),
            ),
            (b"nothing here", None),
            (b"Version: \x1b[31m", None),
            (b"", None),
        ];
        for (log, want) in table {
            assert_eq!(criu_version_from_log(log).as_deref(), want);
        }
    }

    #[test]
    fn criu_version_annotations() {
        let mut spec = SpecDump::default();
        assert_eq!(spec.criu_version(), None);
        spec.annotations
            .insert(keys::CRIO_CHECKPOINT_CRIU_VERSION.into(), "40200".into());
        assert_eq!(spec.criu_version().as_deref(), Some("40200"));
    }
}
