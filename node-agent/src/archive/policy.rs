//! What a restore may take from `spec.dump`.
//!
//! `spec.dump` describes the checkpointed container on its source node and
//! is as untrusted as the rest of the archive. The policy:
//!
//! 1. **No host path comes from the checkpoint.** Bind-mount sources,
//!    namespace paths and the root path in `spec.dump` name things on the
//!    source node; a restore never opens, mounts or joins them. Each bind
//!    mount is reported by its destination only, and the restore must map
//!    every destination to the target container's own mount at the same
//!    destination (CRIU `ext_mnt`), refusing when the target lacks one (CRI-O
//!    made that refusal a security fix).
//! 2. **Only the mounts a runtime sets up itself.** `proc`, `sysfs`, `tmpfs`,
//!    `devpts`, `mqueue`, `cgroup`, `cgroup2`, `shm` and `bind` are accepted:
//!    the target's runtime recreates them. Any other file system type (`nfs`,
//!    `ext4`, `overlay`, `fuse`, ...) is refused: a checkpoint cannot make
//!    the agent mount a file system.
//! 3. **No devices.** Entries in `linux.devices`, bind mounts whose source is
//!    a device under `/dev`, and device cgroup rules that allow anything
//!    beyond the devices every container gets (`null`, `zero`, `full`,
//!    `random`, `urandom`, `tty`, `console`, `ptmx`, `pts/*`, `net/tun`) are
//!    refused. A privileged container allows all devices, so its checkpoint
//!    is refused too.
//! 4. **Destinations are plain.** A mount destination must be absolute and
//!    free of `..`, and must not be `/` itself.
//!
//! `config.dump` carries only names, ids and times (image name, runtime);
//! nothing in it is used as a path or grants anything.
//!
//! [`review`] is pure: it lists every finding at once, so an operator sees
//! the whole problem in one error.

use std::fmt;

use serde::Serialize;

use super::metadata::{SpecDevice, SpecDeviceRule, SpecDump};

/// Mount types a runtime creates inside every container.
pub const RUNTIME_MOUNT_TYPES: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "shm",
];

/// Character devices (type, major, minor; `None` = any minor) that every
/// container may use: runc's and containerd's default device allow list.
pub const DEFAULT_CHAR_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),    // null
    (1, Some(5)),    // zero
    (1, Some(7)),    // full
    (1, Some(8)),    // random
    (1, Some(9)),    // urandom
    (5, Some(0)),    // tty
    (5, Some(1)),    // console
    (5, Some(2)),    // ptmx
    (136, None),     // pts/*
    (10, Some(200)), // net/tun
];

/// A bind mount of the checkpointed container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindMount {
    /// Where it was mounted in the container.
    pub destination: String,
    /// Whether it was read-only.
    pub read_only: bool,
}

/// Something in `spec.dump` a restore will not grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Finding {
    /// A mount of a file system type the runtime does not create itself.
    UnknownMountType {
        /// Mount destination.
        destination: String,
        /// Its type.
        fs_type: String,
    },
    /// A bind mount of a device node.
    DeviceBind {
        /// Mount destination.
        destination: String,
        /// Its source on the checkpointed node.
        source: String,
    },
    /// A device node the container had.
    DeviceNode {
        /// Path in the container.
        path: String,
        /// `c`, `b`, `u` or `p`.
        device_type: String,
        /// Major number.
        major: i64,
        /// Minor number.
        minor: i64,
    },
    /// A device cgroup rule allowing more than the default devices.
    DeviceAccess {
        /// The rule, as `type major:minor access`.
        rule: String,
    },
    /// A destination that is relative, has `..`, or is `/`.
    BadDestination {
        /// The destination.
        destination: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMountType {
                destination,
                fs_type,
            } => {
                write!(
                    f,
                    "mount at {destination:?} has file system type {fs_type:?}, which a restore does not mount"
                )
            }
            Self::DeviceBind {
                destination,
                source,
            } => {
                write!(f, "mount at {destination:?} binds the device {source:?}")
            }
            Self::DeviceNode {
                path,
                device_type,
                major,
                minor,
            } => write!(f, "device node {path:?} ({device_type} {major}:{minor})"),
            Self::DeviceAccess { rule } => write!(f, "device cgroup rule allows {rule}"),
            Self::BadDestination { destination } => {
                write!(
                    f,
                    "mount destination {destination:?} is not a plain absolute path"
                )
            }
        }
    }
}

/// The outcome of reviewing a `spec.dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountReview {
    /// Bind mounts, by destination, in spec order. The restore must find a
    /// mount of the target container at each destination.
    pub bind_mounts: Vec<BindMount>,
    /// Destinations of runtime-created mounts (`proc`, `tmpfs`, ...).
    pub runtime_mounts: Vec<String>,
    /// What the restore must refuse.
    pub findings: Vec<Finding>,
}

/// A checkpoint that asks for more than a restore grants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint asks for what a restore does not grant: {}", list(.findings))]
pub struct PolicyError {
    /// Every finding.
    pub findings: Vec<Finding>,
}

fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl MountReview {
    /// Destinations of the bind mounts, in spec order.
    pub fn bind_mount_destinations(&self) -> Vec<&str> {
        self.bind_mounts
            .iter()
            .map(|m| m.destination.as_str())
            .collect()
    }

    /// `Ok` when nothing was found; otherwise every finding in one error.
    pub fn ensure_restorable(&self) -> Result<(), PolicyError> {
        if self.findings.is_empty() {
            Ok(())
        } else {
            Err(PolicyError {
                findings: self.findings.clone(),
            })
        }
    }
}

/// Reviews the mounts and devices of a `spec.dump` against the policy in the
/// module documentation.
pub fn review(spec: &SpecDump) -> MountReview {
    let mut review = MountReview::default();
    for mount in &spec.mounts {
        let destination = mount.destination.clone();
        if !plain_destination(&destination) {
            review.findings.push(Finding::BadDestination {
                destination: destination.clone(),
            });
            continue;
        }
        let is_bind = mount.kind.as_deref() == Some("bind")
            || mount.options.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            if let Some(source) = mount.source.as_deref()
                && is_device_source(source)
            {
                review.findings.push(Finding::DeviceBind {
                    destination,
                    source: source.to_string(),
                });
                continue;
            }
            review.bind_mounts.push(BindMount {
                destination,
                read_only: mount.options.iter().any(|o| o == "ro"),
            });
            continue;
        }
        match mount.kind.as_deref() {
            Some(t) if RUNTIME_MOUNT_TYPES.contains(&t) => review.runtime_mounts.push(destination),
            other => review.findings.push(Finding::UnknownMountType {
                destination,
                fs_type: other.unwrap_or("").to_string(),
            }),
        }
    }
    if let Some(linux) = &spec.linux {
        for SpecDevice {
            path,
            kind,
            major,
            minor,
        } in &linux.devices
        {
            review.findings.push(Finding::DeviceNode {
                path: path.clone(),
                device_type: kind.clone(),
                major: *major,
                minor: *minor,
            });
        }
        if let Some(resources) = &linux.resources {
            for rule in resources.devices.iter().filter(|r| r.allow) {
                if !default_device(rule) {
                    review.findings.push(Finding::DeviceAccess {
                        rule: describe_rule(rule),
                    });
                }
            }
        }
    }
    review
}

/// Absolute, no `..`, not `/`.
fn plain_destination(destination: &str) -> bool {
    destination.starts_with('/')
        && !destination.split('/').any(|c| c == "..")
        && destination.split('/').any(|c| !c.is_empty() && c != ".")
        && !destination.contains('\0')
}

/// A bind source under `/dev` other than `/dev/shm` (shared memory, not a
/// device) names a device node or the host's device tree.
fn is_device_source(source: &str) -> bool {
    let s = source.trim_end_matches('/');
    (s == "/dev" || s.starts_with("/dev/")) && !(s == "/dev/shm" || s.starts_with("/dev/shm/"))
}

/// Whether an allow rule stays within the default devices.
fn default_device(rule: &SpecDeviceRule) -> bool {
    if rule.kind.as_deref() != Some("c") {
        return false;
    }
    let Some(major) = rule.major else {
        return false;
    };
    DEFAULT_CHAR_DEVICES.iter().any(|(m, minor)| {
        *m == major
            && match (minor, rule.minor) {
                (None, _) => true,
                (Some(want), Some(got)) => *want == got,
                (Some(_), None) => false,
            }
    })
}

fn describe_rule(rule: &SpecDeviceRule) -> String {
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    format!(
        "{} {}:{} {}",
        rule.kind.as_deref().unwrap_or("a"),
        num(rule.major),
        num(rule.minor),
        rule.access.as_deref().unwrap_or("rwm")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::metadata::parse_spec;

    /// Mounts and device rules of a pod container as containerd writes them.
    const CONTAINERD_SPEC: &str = r#"{
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/kubelet/pods/u/etc-hosts", "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/dev/termination-log", "type": "bind", "source": "/var/lib/kubelet/pods/u/containers/c/x", "options": ["rbind", "rw"]},
            {"destination": "/etc/hostname", "type": "bind", "source": "/var/lib/containerd/sandboxes/s/hostname", "options": ["rbind", "rw"]},
            {"destination": "/dev/shm", "type": "bind", "source": "/run/containerd/sandboxes/s/shm", "options": ["rbind", "rw"]},
            {"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": "/var/lib/kubelet/pods/u/volumes/token", "options": ["rbind", "ro"]}
        ],
        "linux": {"resources": {"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}
        ]}}
    }"#;

    #[test]
    fn an_ordinary_pod_container_is_restorable() {
        let review = review(&parse_spec(CONTAINERD_SPEC.as_bytes()).expect("parses"));
        assert_eq!(review.findings, vec![]);
        assert_eq!(
            review.bind_mount_destinations(),
            [
                "/etc/hosts",
                "/dev/termination-log",
                "/etc/hostname",
                "/dev/shm",
                "/var/run/secrets/kubernetes.io/serviceaccount"
            ]
        );
        assert!(review.bind_mounts[4].read_only);
        assert_eq!(review.runtime_mounts.len(), 6);
        assert!(review.ensure_restorable().is_ok());
    }

    #[test]
    fn findings_table() {
        let table: Vec<(&str, Finding)> = vec![
            (
                r#"{"mounts": [{"destination": "/data", "type": "nfs", "source": "server:/x"}]}"#,
                Finding::UnknownMountType {
                    destination: "/data".into(),
                    fs_type: "nfs".into(),
                },
            ),
            (
                r#"{"mounts": [{"destination": "/x", "source": "/y"}]}"#,
                Finding::UnknownMountType {
                    destination: "/x".into(),
                    fs_type: "".into(),
                },
            ),
            (
                r#"{"mounts": [{"destination": "/dev/fuse", "type": "bind", "source": "/dev/fuse", "options": ["rbind"]}]}"#,
                Finding::DeviceBind {
                    destination: "/dev/fuse".into(),
                    source: "/dev/fuse".into(),
                },
            ),
            (
                r#"{"mounts": [{"destination": "/host-dev", "type": "none", "source": "/dev/", "options": ["bind"]}]}"#,
                Finding::DeviceBind {
                    destination: "/host-dev".into(),
                    source: "/dev/".into(),
                },
            ),
            (
                r#"{"mounts": [{"destination": "../etc", "type": "bind", "source": "/etc"}]}"#,
                Finding::BadDestination {
                    destination: "../etc".into(),
                },
            ),
            (
                r#"{"mounts": [{"destination": "/a/../../etc", "type": "tmpfs"}]}"#,
                Finding::BadDestination {
                    destination: "/a/../../etc".into(),
                },
            ),
            (
                r#"{"mounts": [{"destination": "/", "type": "bind", "source": "/"}]}"#,
                Finding::BadDestination {
                    destination: "/".into(),
                },
            ),
            (
                r#"{"linux": {"devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]}}"#,
                Finding::DeviceNode {
                    path: "/dev/sda".into(),
                    device_type: "b".into(),
                    major: 8,
                    minor: 0,
                },
            ),
            (
                r#"{"linux": {"resources": {"devices": [{"allow": true, "access": "rwm"}]}}}"#,
                Finding::DeviceAccess {
                    rule: "a *:* rwm".into(),
                },
            ),
            (
                r#"{"linux": {"resources": {"devices": [{"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rw"}]}}}"#,
                Finding::DeviceAccess {
                    rule: "c 195:0 rw".into(),
                },
            ),
            (
                r#"{"linux": {"resources": {"devices": [{"allow": true, "type": "c", "major": 1, "access": "rw"}]}}}"#,
                Finding::DeviceAccess {
                    rule: "c 1:* rw".into(),
                },
            ),
        ];
        for (json, want) in table {
            let review = review(&parse_spec(json.as_bytes()).expect("parses"));
            assert_eq!(review.findings, vec![want], "{json}");
            assert!(review.bind_mounts.is_empty(), "{json}");
        }
    }

    #[test]
    fn one_error_lists_every_finding() {
        let spec = parse_spec(
            br#"{"mounts": [{"destination": "/data", "type": "ext4", "source": "/dev/sdb1"}],
                 "linux": {"devices": [{"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232}]}}"#,
        )
        .expect("parses");
        let err = review(&spec).ensure_restorable().expect_err("refused");
        assert_eq!(
            err.to_string(),
            "checkpoint asks for what a restore does not grant: mount at \"/data\" has file system type \"ext4\", which a restore does not mount; device node \"/dev/kvm\" (c 10:232)"
        );
    }
}
