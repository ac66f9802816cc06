//! CRIU version numbers as runc and go-criu compare them.

use std::fmt;

use podrestore_proto::criu as rpc;

use super::CriuError;

/// Oldest CRIU runc restores or checkpoints with at all (3.0, the VERSION RPC).
pub const MIN_CRIU: u32 = 30000;
/// External network namespaces (`extRootNetNS`): CRIU 3.11.
pub const EXTERNAL_NET_NS: u32 = 31100;
/// External PID namespaces (`extRootPidNS`): CRIU 3.15.
pub const EXTERNAL_PID_NS: u32 = 31500;
/// A time namespace CRIU creates by itself on restore: CRIU 3.14.
pub const TIME_NS: u32 = 31400;
/// `lsm_profile` and `lsm_mount_context`: CRIU 3.16.
pub const LSM_OPTIONS: u32 = 31600;
/// The `network_lock` RPC field: CRIU 3.16.
pub const NETWORK_LOCK: u32 = 31600;
/// `network_lock = SKIP`: CRIU 3.19.
pub const NETWORK_LOCK_SKIP: u32 = 31900;

/// The version a CRIU binary reports on the VERSION RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuVersion {
    /// Major number, e.g. 4 for 4.2.1.
    pub major: u32,
    /// Minor number, e.g. 2 for 4.2.1.
    pub minor: u32,
    /// Sublevel, e.g. 1 for 4.2.1; 0 when CRIU does not send it.
    pub sublevel: u32,
    /// The git commit of a build from a git tree; `None` for release tarballs.
    pub gitid: Option<String>,
    /// The release name CRIU reports, if any.
    pub name: Option<String>,
}

impl CriuVersion {
    /// The comparable number: `major*10000 + minor*100 + sublevel`.
    ///
    /// go-criu's rule (which runc uses): a build with a non-empty gitid is rounded
    /// down to its minor and counted as the next minor, since a git tree already
    /// carries what the next release will. A git build of 3.14 counts as 31500.
    pub fn number(&self) -> u32 {
        version_number(self.major, self.minor, self.sublevel, self.gitid.as_deref())
    }
}

impl fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.sublevel != 0 {
            write!(f, ".{}", self.sublevel)?;
        }
        if let Some(gitid) = &self.gitid {
            write!(f, " ({gitid})")?;
        }
        Ok(())
    }
}

impl TryFrom<&rpc::CriuVersion> for CriuVersion {
    type Error = CriuError;

    fn try_from(v: &rpc::CriuVersion) -> Result<Self, CriuError> {
        let part = |n: i32| {
            u32::try_from(n).map_err(|_| CriuError::Protocol(format!("bad criu version {v:?}")))
        };
        Ok(Self {
            major: part(v.major_number)?,
            minor: part(v.minor_number)?,
            sublevel: part(v.sublevel.unwrap_or(0))?,
            gitid: v.gitid.clone().filter(|g| !g.is_empty()),
            name: v.name.clone(),
        })
    }
}

/// The number go-criu computes from the parts of a VERSION answer (see
/// [`CriuVersion::number`]).
pub fn version_number(major: u32, minor: u32, sublevel: u32, gitid: Option<&str>) -> u32 {
    let mut number = major * 10000 + minor * 100 + sublevel;
    if gitid.is_some_and(|g| !g.is_empty()) {
        number = number - number % 100 + 100;
    }
    number
}

/// runc's `checkCriuVersion`: `CRIU version <v> must be <min> or higher`.
pub fn check_version(version: u32, min: u32) -> Result<(), VersionTooOld> {
    if version < min {
        return Err(VersionTooOld { version, min });
    }
    Ok(())
}

/// The installed CRIU is older than a feature needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CRIU version {version} must be {min} or higher")]
pub struct VersionTooOld {
    /// The installed version number.
    pub version: u32,
    /// The version number needed.
    pub min: u32,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_arithmetic() {
        let cases: &[(u32, u32, u32, Option<&str>, u32)] = &[
            (3, 0, 0, None, 30000),
            (3, 11, 0, None, 31100),
            (3, 14, 0, None, 31400),
            (3, 14, 0, Some("v3.14-12-gdeadbee"), 31500),
            (3, 14, 3, Some("abc"), 31500),
            (3, 15, 0, None, 31500),
            (3, 16, 1, None, 31601),
            (3, 19, 0, Some(""), 31900),
            (4, 1, 1, None, 40101),
            (4, 2, 1, None, 40201),
            (4, 2, 1, Some("0123456"), 40300),
            (3, 99, 5, Some("x"), 40000),
        ];
        for &(major, minor, sublevel, gitid, want) in cases {
            assert_eq!(
                version_number(major, minor, sublevel, gitid),
                want,
                "{major}.{minor}.{sublevel} gitid {gitid:?}"
            );
        }
    }

    #[test]
    fn from_rpc_treats_missing_sublevel_and_empty_gitid_as_absent() {
        let v = CriuVersion::try_from(&rpc::CriuVersion {
            major_number: 3,
            minor_number: 14,
            gitid: Some(String::new()),
            sublevel: None,
            extra: None,
            name: None,
        })
        .unwrap();
        assert_eq!(v.number(), 31400);
        assert_eq!(v.gitid, None);
        assert_eq!(v.to_string(), "3.14");
    }

    #[test]
    fn negative_parts_are_a_protocol_error() {
        let err = CriuVersion::try_from(&rpc::CriuVersion {
            major_number: -1,
            minor_number: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("bad criu version"), "{err}");
    }

    #[test]
    fn check_version_uses_runc_wording() {
        assert_eq!(check_version(31500, 31500), Ok(()));
        assert_eq!(
            check_version(20900, MIN_CRIU).unwrap_err().to_string(),
            "CRIU version 20900 must be 30000 or higher"
        );
    }
}
