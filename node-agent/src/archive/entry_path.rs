//! Validation of archive entry paths: pure functions, no I/O.
//!
//! An entry path is accepted only if it names something below the extraction
//! root without any help from the file system: relative, no `..`, bounded
//! depth and length. Whether a component on disk is a symbolic link is checked
//! separately, at the time the entry is created.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::limits::{Limits, NAME_MAX};

/// The raw name of an archive entry, printed quoted and escaped so that a
/// hostile name cannot forge log lines or terminal escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName(pub Vec<u8>);

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for EntryName {
    fn from(name: &str) -> Self {
        Self(name.as_bytes().to_vec())
    }
}

/// Why an entry path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// The path is empty.
    Empty,
    /// The path starts with `/`.
    Absolute,
    /// Following the `..` components lexically leaves the root.
    Escapes,
    /// The path has a `..` component that stays inside the root; refused all
    /// the same, since no runtime writes one.
    DotDot,
    /// The path contains a NUL byte.
    Nul,
    /// More components than [`Limits::max_depth`].
    TooDeep {
        /// Components in the path.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// Longer than [`Limits::max_path_bytes`].
    TooLong {
        /// Bytes in the path.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// One component is longer than `NAME_MAX`.
    NameTooLong {
        /// Bytes in the component.
        len: usize,
    },
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("has an empty path"),
            Self::Absolute => {
                f.write_str("is an absolute path; entries must be relative to the archive root")
            }
            Self::Escapes => f.write_str("escapes the extraction root"),
            Self::DotDot => f.write_str("contains a \"..\" component, which is never accepted"),
            Self::Nul => f.write_str("contains a NUL byte"),
            Self::TooDeep { depth, limit } => {
                write!(
                    f,
                    "is nested {depth} levels deep, more than the limit of {limit}"
                )
            }
            Self::TooLong { len, limit } => {
                write!(
                    f,
                    "has a path of {len} bytes, more than the limit of {limit}"
                )
            }
            Self::NameTooLong { len } => write!(
                f,
                "has a path component of {len} bytes, more than the limit of {NAME_MAX}"
            ),
        }
    }
}

/// A validated entry path: normal components only, relative to the root.
/// The empty path is the root itself (`.` or `./` in an archive).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath {
    components: Vec<OsString>,
}

impl EntryPath {
    /// Validates a raw tar path. `.` components, repeated and trailing
    /// slashes are dropped; anything that could leave the root is refused.
    pub fn parse(raw: &[u8], limits: &Limits) -> Result<Self, PathProblem> {
        if raw.is_empty() {
            return Err(PathProblem::Empty);
        }
        if raw.contains(&0) {
            return Err(PathProblem::Nul);
        }
        if raw[0] == b'/' {
            return Err(PathProblem::Absolute);
        }
        if raw.len() > limits.max_path_bytes {
            return Err(PathProblem::TooLong {
                len: raw.len(),
                limit: limits.max_path_bytes,
            });
        }
        let mut components = Vec::new();
        // Lexical depth, to tell "escapes" from a harmless "a/../b".
        let mut level: isize = 0;
        let mut dotdot = false;
        for part in raw.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    dotdot = true;
                    level -= 1;
                    if level < 0 {
                        return Err(PathProblem::Escapes);
                    }
                }
                name => {
                    if name.len() > NAME_MAX {
                        return Err(PathProblem::NameTooLong { len: name.len() });
                    }
                    level += 1;
                    components.push(OsStr::from_bytes(name).to_os_string());
                }
            }
        }
        if dotdot {
            return Err(PathProblem::DotDot);
        }
        if components.len() > limits.max_depth {
            return Err(PathProblem::TooDeep {
                depth: components.len(),
                limit: limits.max_depth,
            });
        }
        Ok(Self { components })
    }

    /// The root itself.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The components, outermost first.
    pub fn components(&self) -> &[OsString] {
        &self.components
    }

    /// The components of the parent directory.
    pub fn parent(&self) -> &[OsString] {
        match self.components.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.components.last().map(OsString::as_os_str)
    }

    /// The path relative to the root, as a `PathBuf`.
    pub fn to_path_buf(&self) -> PathBuf {
        self.components.iter().collect()
    }

    /// The normalized path joined with `/`, e.g. `checkpoint/pstree.img`.
    pub fn as_bytes_joined(&self) -> Vec<u8> {
        let parts: Vec<&[u8]> = self.components.iter().map(|c| c.as_bytes()).collect();
        parts.join(&b'/')
    }

    /// The normalized path as (lossy) text, for maps and display.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.as_bytes_joined()).into_owned()
    }
}

impl From<EntryPath> for OsString {
    fn from(path: EntryPath) -> Self {
        OsString::from_vec(path.as_bytes_joined())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<String, PathProblem> {
        EntryPath::parse(raw.as_bytes(), &Limits::default()).map(|p| p.to_string_lossy())
    }

    #[test]
    fn accepted_paths_are_normalized() {
        let table = [
            ("config.dump", "config.dump"),
            ("./config.dump", "config.dump"),
            ("checkpoint/", "checkpoint"),
            ("./checkpoint/pages-1.img", "checkpoint/pages-1.img"),
            ("checkpoint//inventory.img", "checkpoint/inventory.img"),
            ("a/./b/./c", "a/b/c"),
            (".", ""),
            ("./", ""),
            ("...", "..."),
            ("..a/b..", "..a/b.."),
            ("a\\..\\b", "a\\..\\b"),
        ];
        for (raw, want) in table {
            assert_eq!(parse(raw), Ok(want.to_string()), "{raw}");
        }
    }

    #[test]
    fn refused_paths_say_why() {
        let long = "a".repeat(256);
        let deep = "d/".repeat(65);
        let table: Vec<(&str, PathProblem)> = vec![
            ("", PathProblem::Empty),
            ("/", PathProblem::Absolute),
            ("/etc/passwd", PathProblem::Absolute),
            ("//etc/passwd", PathProblem::Absolute),
            ("..", PathProblem::Escapes),
            ("../etc/passwd", PathProblem::Escapes),
            ("./../x", PathProblem::Escapes),
            ("a/../../x", PathProblem::Escapes),
            ("a/b/../../../x", PathProblem::Escapes),
            ("a/../b", PathProblem::DotDot),
            ("a/..", PathProblem::DotDot),
            ("a\0b", PathProblem::Nul),
            (long.as_str(), PathProblem::NameTooLong { len: 256 }),
            (
                deep.as_str(),
                PathProblem::TooDeep {
                    depth: 65,
                    limit: 64,
                },
            ),
        ];
        for (raw, want) in table {
            assert_eq!(parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn path_length_limit_counts_raw_bytes() {
        let limits = Limits {
            max_path_bytes: 10,
            ..Limits::default()
        };
        assert!(EntryPath::parse(b"0123456789", &limits).is_ok());
        assert_eq!(
            EntryPath::parse(b"0123456789a", &limits),
            Err(PathProblem::TooLong { len: 11, limit: 10 })
        );
    }

    #[test]
    fn problems_read_as_sentences_about_the_entry() {
        let name = EntryName(b"../etc/passwd".to_vec());
        assert_eq!(
            format!("archive entry {name} {}", PathProblem::Escapes),
            r#"archive entry "../etc/passwd" escapes the extraction root"#
        );
        let hostile = EntryName(b"x\n\x1b[31m".to_vec());
        assert_eq!(hostile.to_string(), r#""x\n\u{1b}[31m""#);
    }

    #[test]
    fn parent_and_file_name() {
        let p = EntryPath::parse(b"checkpoint/core-1.img", &Limits::default()).expect("valid");
        assert_eq!(p.file_name(), Some(OsStr::new("core-1.img")));
        assert_eq!(p.parent(), &[OsString::from("checkpoint")]);
        let root = EntryPath::parse(b"./", &Limits::default()).expect("valid");
        assert!(root.is_root());
        assert_eq!(root.file_name(), None);
        assert!(root.parent().is_empty());
    }
}
