//! Helpers shared by the archive integration tests: a raw tar writer that
//! can produce every malicious archive (the `tar` crate refuses to write
//! most of them), and a file tree snapshot to prove nothing changed outside
//! the extraction root.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Builds a tar archive header by header.
#[derive(Default)]
pub struct RawTar {
    buf: Vec<u8>,
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(text.len() <= digits, "value {value} does not fit");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one header and its data. `claimed` is the size written into
    /// the header (usually `data.len()`); names longer than 100 bytes get a
    /// GNU long-name record.
    pub fn raw(
        &mut self,
        name: &[u8],
        flag: u8,
        link: &[u8],
        claimed: u64,
        data: &[u8],
    ) -> &mut Self {
        if name.len() > 100 {
            let mut with_nul = name.to_vec();
            with_nul.push(0);
            self.raw(
                b"././@LongLink",
                b'L',
                b"",
                with_nul.len() as u64,
                &with_nul,
            );
        }
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        if claimed < 0o77777777777 {
            octal(&mut h[124..136], claimed);
        } else {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&claimed.to_be_bytes());
        }
        octal(&mut h[136..148], 0);
        h[156] = flag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), b'0', b"", data.len() as u64, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'5', b"", 0, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'2', target.as_bytes(), 0, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'1', target.as_bytes(), 0, b"")
    }

    pub fn chardev(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'3', b"", 0, b"")
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'6', b"", 0, b"")
    }

    /// The archive with its end marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// Minimal metadata every checkpoint archive carries.
pub const CONFIG: &str = r#"{"id":"0123456789abcdef","name":"counter","rootfsImageName":"docker.io/library/busybox:1.36","runtime":"runc","createdTime":"2025-01-02T03:04:05Z","checkpointedTime":"2025-01-02T04:00:00Z"}"#;
pub const SPEC: &str = r#"{"ociVersion":"1.2.0","process":{"args":["/bin/counter"],"cwd":"/","env":["PATH=/bin"]},"annotations":{"io.kubernetes.cri.sandbox-name":"pod-a","io.kubernetes.cri.sandbox-namespace":"default","io.kubernetes.cri.sandbox-uid":"uid-a","io.kubernetes.cri.container-name":"counter"}}"#;

/// Every path below `root` with its type, size and mode, without following
/// symbolic links.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u64, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let kind = if meta.file_type().is_symlink() {
                format!(
                    "symlink -> {}",
                    fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if meta.is_file() {
                "file".to_string()
            } else {
                "other".to_string()
            };
            out.insert(path, (kind, meta.len(), meta.mode()));
        }
    }
    out
}

/// A scratch area: `outside/` holds a sentinel that must never change, and
/// `dest` is where extraction goes.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("outside")).expect("mkdir outside");
        fs::write(dir.path().join("outside/sentinel"), b"untouched").expect("write sentinel");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn dest(&self) -> PathBuf {
        self.path().join("dest")
    }

    pub fn outside(&self) -> PathBuf {
        self.path().join("outside")
    }
}
