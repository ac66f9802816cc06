//! Checks every request again on the node, whatever the operator checked: the agent runs
//! as root and must not trust its caller with paths, names or ranges.

use std::{
    io,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use podrestore_proto::agent as pb;

use super::engine::{ManageCgroupsMode, NetworkLock, RestoreOptions, Target};

/// Bounds of `timeout_seconds`, the same as the CRD's.
pub const TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 1..=3600;

/// Why a request was refused before anything ran.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// A required field is empty.
    #[error("{field} is required")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A UID that is not a UUID (UIDs also name files in the state directory).
    #[error("{field} {value:?} is not a UID")]
    BadUid {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A Kubernetes name that breaks DNS-1123 rules.
    #[error("{field} {value:?} is not a valid name: {rule}")]
    BadName {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// The rule broken.
        rule: &'static str,
    },
    /// The restore and its target are in different namespaces.
    #[error(
        "target pod namespace {target:?} differs from the PodRestore's namespace {restore:?}; a PodRestore may only target pods in its own namespace"
    )]
    NamespaceMismatch {
        /// Namespace of the PodRestore.
        restore: String,
        /// Namespace of the target pod.
        target: String,
    },
    /// A relative archive path or one with `..`.
    #[error("archive path {path:?} must be absolute and free of '..' segments")]
    BadPath {
        /// The path.
        path: String,
    },
    /// No archive at the path.
    #[error("no checkpoint archive at {path:?}")]
    ArchiveNotFound {
        /// The path.
        path: String,
    },
    /// The archive resolves outside every checkpoint directory.
    #[error(
        "archive path {path:?} resolves to {resolved:?}, outside the checkpoint directories this agent serves ({dirs})"
    )]
    OutsideCheckpointDirs {
        /// The path asked for.
        path: String,
        /// What it resolves to.
        resolved: PathBuf,
        /// The directories, comma-separated.
        dirs: String,
    },
    /// The path is a directory or a device, not a file.
    #[error("archive path {path:?} is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// The path could not be resolved.
    #[error("cannot resolve archive path {path:?}: {kind}")]
    Resolve {
        /// The path.
        path: String,
        /// What went wrong.
        kind: io::ErrorKind,
    },
    /// The timeout is out of bounds.
    #[error("timeout_seconds {value} is out of range 1..=3600")]
    Timeout {
        /// The value.
        value: u32,
    },
    /// An enum value this agent does not know.
    #[error("{field} has unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// No checkpoint source, or one this agent does not serve.
    #[error("checkpoint source is required (local_archive)")]
    NoSource,
    /// A remote archive where only a local one makes sense (Inspect).
    #[error("checkpoint source must be a local_archive on this node")]
    NotLocal,
    /// A source agent endpoint that is not host:port.
    #[error("source agent endpoint {value:?} is not host:port")]
    BadEndpoint {
        /// The value.
        value: String,
    },
}

impl From<ValidationError> for tonic::Status {
    fn from(err: ValidationError) -> Self {
        let message = err.to_string();
        match err {
            ValidationError::ArchiveNotFound { .. } => tonic::Status::not_found(message),
            ValidationError::OutsideCheckpointDirs { .. } => {
                tonic::Status::permission_denied(message)
            }
            _ => tonic::Status::invalid_argument(message),
        }
    }
}

/// Checks that `value` is a Kubernetes UID (a UUID in its 36-character text form).
pub fn uid(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Missing { field });
    }
    let bytes = value.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(())
    } else {
        Err(ValidationError::BadUid {
            field,
            value: value.to_owned(),
        })
    }
}

/// Checks a DNS-1123 label (namespaces, container names): at most 63 lower-case
/// alphanumerics or '-', starting and ending with an alphanumeric.
pub fn dns_label(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Missing { field });
    }
    let bad = |rule| ValidationError::BadName {
        field,
        value: value.to_owned(),
        rule,
    };
    if value.len() > 63 {
        return Err(bad("at most 63 characters"));
    }
    label_chars(value).map_err(bad)
}

/// Checks a DNS-1123 subdomain (pod names): at most 253 characters, dot-separated labels.
pub fn dns_subdomain(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Missing { field });
    }
    let bad = |rule| ValidationError::BadName {
        field,
        value: value.to_owned(),
        rule,
    };
    if value.len() > 253 {
        return Err(bad("at most 253 characters"));
    }
    value.split('.').try_for_each(label_chars).map_err(bad)
}

fn label_chars(label: &str) -> Result<(), &'static str> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if label.is_empty() {
        return Err("empty label");
    }
    if !label.chars().all(|c| alnum(c) || c == '-') {
        return Err("only lower-case letters, digits and '-'");
    }
    if !label.starts_with(alnum) || !label.ends_with(alnum) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// Resolves `path` to the canonical path of a regular file inside one of `dirs` (which
/// must be canonical themselves). Symbolic links are resolved before the check so that a
/// link inside a checkpoint directory cannot point the agent elsewhere.
pub fn archive_path(path: &str, dirs: &[PathBuf]) -> Result<PathBuf, ValidationError> {
    if path.is_empty() {
        return Err(ValidationError::Missing {
            field: "checkpoint.local_archive.path",
        });
    }
    let raw = Path::new(path);
    if !raw.is_absolute() || raw.components().any(|c| c == Component::ParentDir) {
        return Err(ValidationError::BadPath {
            path: path.to_owned(),
        });
    }
    let resolved = std::fs::canonicalize(raw).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => ValidationError::ArchiveNotFound {
            path: path.to_owned(),
        },
        kind => ValidationError::Resolve {
            path: path.to_owned(),
            kind,
        },
    })?;
    if !dirs
        .iter()
        .any(|dir| resolved.starts_with(dir) && resolved != *dir)
    {
        return Err(ValidationError::OutsideCheckpointDirs {
            path: path.to_owned(),
            resolved,
            dirs: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let meta = std::fs::metadata(&resolved).map_err(|err| ValidationError::Resolve {
        path: path.to_owned(),
        kind: err.kind(),
    })?;
    if !meta.is_file() {
        return Err(ValidationError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(resolved)
}

/// Resolves a checkpoint source to a local archive path.
pub fn source(
    source: Option<&pb::CheckpointSource>,
    dirs: &[PathBuf],
) -> Result<PathBuf, ValidationError> {
    match source.and_then(|s| s.source.as_ref()) {
        Some(pb::checkpoint_source::Source::LocalArchive(archive)) => {
            archive_path(&archive.path, dirs)
        }
        Some(pb::checkpoint_source::Source::RemoteArchive(_)) => Err(ValidationError::NotLocal),
        None => Err(ValidationError::NoSource),
    }
}

/// Checks the target container and that it is in the PodRestore's namespace.
pub fn target(
    target: Option<&pb::TargetContainer>,
    restore_namespace: &str,
) -> Result<Target, ValidationError> {
    let t = target.ok_or(ValidationError::Missing { field: "target" })?;
    uid("target.pod_uid", &t.pod_uid)?;
    dns_label("target.pod_namespace", &t.pod_namespace)?;
    dns_subdomain("target.pod_name", &t.pod_name)?;
    dns_label("target.container_name", &t.container_name)?;
    if t.container_id.is_empty() {
        return Err(ValidationError::Missing {
            field: "target.container_id",
        });
    }
    if t.pod_namespace != restore_namespace {
        return Err(ValidationError::NamespaceMismatch {
            restore: restore_namespace.to_owned(),
            target: t.pod_namespace.clone(),
        });
    }
    Ok(Target {
        pod_uid: t.pod_uid.clone(),
        pod_namespace: t.pod_namespace.clone(),
        pod_name: t.pod_name.clone(),
        container_name: t.container_name.clone(),
        container_id: t.container_id.clone(),
    })
}

/// Checks the CRIU options; unspecified enums take CRIU's defaults, a zero timeout takes
/// the CRD's default (300 s).
pub fn options(options: Option<&pb::RestoreOptions>) -> Result<RestoreOptions, ValidationError> {
    let default = pb::RestoreOptions::default();
    let o = options.unwrap_or(&default);
    let timeout = match o.timeout_seconds {
        0 => 300,
        t if TIMEOUT_SECONDS.contains(&t) => t,
        value => return Err(ValidationError::Timeout { value }),
    };
    let manage_cgroups_mode = match pb::ManageCgroupsMode::try_from(o.manage_cgroups_mode) {
        Ok(pb::ManageCgroupsMode::Unspecified | pb::ManageCgroupsMode::Soft) => {
            ManageCgroupsMode::Soft
        }
        Ok(pb::ManageCgroupsMode::Full) => ManageCgroupsMode::Full,
        Ok(pb::ManageCgroupsMode::Strict) => ManageCgroupsMode::Strict,
        Ok(pb::ManageCgroupsMode::Ignore) => ManageCgroupsMode::Ignore,
        Err(_) => {
            return Err(ValidationError::UnknownEnum {
                field: "options.manage_cgroups_mode",
                value: o.manage_cgroups_mode,
            });
        }
    };
    let network_lock = match pb::NetworkLock::try_from(o.network_lock) {
        Ok(pb::NetworkLock::Unspecified | pb::NetworkLock::Iptables) => NetworkLock::Iptables,
        Ok(pb::NetworkLock::Nftables) => NetworkLock::Nftables,
        Ok(pb::NetworkLock::Skip) => NetworkLock::Skip,
        Err(_) => {
            return Err(ValidationError::UnknownEnum {
                field: "options.network_lock",
                value: o.network_lock,
            });
        }
    };
    Ok(RestoreOptions {
        tcp_established: o.tcp_established,
        file_locks: o.file_locks,
        shell_job: o.shell_job,
        ext_unix_sk: o.ext_unix_sk,
        manage_cgroups_mode,
        network_lock,
        timeout: Duration::from_secs(u64::from(timeout)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    #[test]
    fn uids() {
        let cases = [
            (UID, true),
            ("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", true),
            ("", false),
            ("../../etc/passwd", false),
            ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f", false),
            ("0f1e2d3c_4b5a-6978-8796-a5b4c3d2e1f0", false),
            ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg", false),
        ];
        for (value, ok) in cases {
            assert_eq!(uid("uid", value).is_ok(), ok, "{value:?}");
        }
    }

    #[test]
    fn names() {
        let long_label = "a".repeat(64);
        let cases: [(&str, bool, bool); 9] = [
            // value, valid label, valid subdomain
            ("web", true, true),
            ("web-1", true, true),
            ("web.example", false, true),
            ("-web", false, false),
            ("web-", false, false),
            ("Web", false, false),
            ("we_b", false, false),
            ("a..b", false, false),
            // Like Kubernetes, subdomains only bound their total length.
            (&long_label, false, true),
        ];
        for (value, label, subdomain) in cases {
            assert_eq!(dns_label("f", value).is_ok(), label, "label {value:?}");
            assert_eq!(
                dns_subdomain("f", value).is_ok(),
                subdomain,
                "subdomain {value:?}"
            );
        }
    }

    #[test]
    fn archive_paths() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("checkpoints");
        let other = root.path().join("elsewhere");
        std::fs::create_dir_all(dir.join("sub"))?;
        std::fs::create_dir_all(&other)?;
        std::fs::write(dir.join("a.tar"), b"x")?;
        std::fs::write(dir.join("sub/b.tar"), b"x")?;
        std::fs::write(other.join("secret"), b"x")?;
        std::os::unix::fs::symlink(other.join("secret"), dir.join("escape.tar"))?;
        std::os::unix::fs::symlink(dir.join("a.tar"), other.join("inward.tar"))?;
        let dirs = vec![std::fs::canonicalize(&dir)?];
        let p = |rel: &str| format!("{}/{rel}", dir.display());

        assert!(archive_path(&p("a.tar"), &dirs).is_ok());
        assert!(archive_path(&p("sub/b.tar"), &dirs).is_ok());
        // A link from outside that lands inside is fine: the resolved path counts.
        assert!(archive_path(&format!("{}/inward.tar", other.display()), &dirs).is_ok());

        let cases = [
            (p("escape.tar"), "OutsideCheckpointDirs"),
            (p("sub/../a.tar"), "BadPath"),
            ("checkpoints/a.tar".to_owned(), "BadPath"),
            (p("missing.tar"), "ArchiveNotFound"),
            (p("sub"), "NotAFile"),
            (dir.display().to_string(), "OutsideCheckpointDirs"),
            (String::new(), "Missing"),
        ];
        for (path, want) in cases {
            let err = archive_path(&path, &dirs).err();
            let got = format!("{err:?}");
            assert!(got.contains(want), "{path:?}: want {want}, got {got}");
        }
        Ok(())
    }

    fn pb_target(namespace: &str) -> pb::TargetContainer {
        pb::TargetContainer {
            pod_uid: UID.into(),
            pod_namespace: namespace.into(),
            pod_name: "forensic".into(),
            container_name: "sleeper".into(),
            container_id: "containerd://abc".into(),
        }
    }

    #[test]
    fn targets() {
        assert!(target(Some(&pb_target("team-a")), "team-a").is_ok());
        assert!(matches!(
            target(Some(&pb_target("team-b")), "team-a"),
            Err(ValidationError::NamespaceMismatch { .. })
        ));
        assert!(matches!(
            target(None, "team-a"),
            Err(ValidationError::Missing { field: "target" })
        ));
        let mut no_id = pb_target("team-a");
        no_id.container_id.clear();
        assert!(target(Some(&no_id), "team-a").is_err());
        let mut bad_container = pb_target("team-a");
        bad_container.container_name = "Sleeper".into();
        assert!(target(Some(&bad_container), "team-a").is_err());
    }

    #[test]
    fn option_ranges_and_defaults() {
        let defaults = options(None).expect("defaults are valid");
        assert_eq!(defaults.timeout, Duration::from_secs(300));
        assert_eq!(defaults.manage_cgroups_mode, ManageCgroupsMode::Soft);
        assert_eq!(defaults.network_lock, NetworkLock::Iptables);

        let with = |f: fn(&mut pb::RestoreOptions)| {
            let mut o = pb::RestoreOptions::default();
            f(&mut o);
            options(Some(&o))
        };
        assert!(with(|o| o.timeout_seconds = 1).is_ok());
        assert!(with(|o| o.timeout_seconds = 3600).is_ok());
        assert!(matches!(
            with(|o| o.timeout_seconds = 3601),
            Err(ValidationError::Timeout { value: 3601 })
        ));
        assert!(matches!(
            with(|o| o.manage_cgroups_mode = 99),
            Err(ValidationError::UnknownEnum { .. })
        ));
        assert!(matches!(
            with(|o| o.network_lock = -1),
            Err(ValidationError::UnknownEnum { .. })
        ));
        let skip = with(|o| o.network_lock = pb::NetworkLock::Skip.into()).expect("skip is valid");
        assert_eq!(skip.network_lock, NetworkLock::Skip);
    }
}
