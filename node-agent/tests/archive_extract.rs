//! Extraction of checkpoint archives, hostile ones first: each is refused
//! with a message naming the entry, and nothing is written outside the
//! extraction root (which is removed again).

mod archive_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use archive_support::{CONFIG, RawTar, SPEC, Scratch, snapshot};
use podrestore_agent::archive::metadata::CheckpointMetadata;
use podrestore_agent::archive::{Limits, extract, extract_checkpoint};
use sha2::{Digest, Sha256};

/// Extracts `archive` into a fresh `dest`, expects the refusal `want`, and
/// checks that the scratch area is exactly as before.
fn refused(archive: &[u8], limits: &Limits, want: &str) {
    let scratch = Scratch::new();
    let before = snapshot(scratch.path());
    let err = extract(archive, &scratch.dest(), limits).expect_err(want);
    assert_eq!(err.to_string(), want);
    assert!(!scratch.dest().exists(), "extraction root left behind");
    assert_eq!(
        snapshot(scratch.path()),
        before,
        "something changed outside"
    );
}

fn base() -> RawTar {
    let mut tar = RawTar::new();
    tar.file("config.dump", CONFIG.as_bytes())
        .file("spec.dump", SPEC.as_bytes())
        .dir("checkpoint/")
        .file("checkpoint/inventory.img", b"inv");
    tar
}

#[test]
fn path_traversal_is_refused() {
    refused(
        &base().file("../x", b"owned").finish(),
        &Limits::default(),
        r#"archive entry "../x" escapes the extraction root"#,
    );
    refused(
        &base()
            .file("checkpoint/../../outside/sentinel", b"owned")
            .finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/../../outside/sentinel" escapes the extraction root"#,
    );
    refused(
        &base().dir("./../").finish(),
        &Limits::default(),
        r#"archive entry "./../" escapes the extraction root"#,
    );
}

#[test]
fn absolute_paths_are_refused() {
    let target = format!("/tmp/podrestore-archive-absolute-{}", std::process::id());
    refused(
        &base().file(&target, b"owned").finish(),
        &Limits::default(),
        &format!(
            "archive entry {target:?} is an absolute path; entries must be relative to the archive root"
        ),
    );
    assert!(!Path::new(&target).exists());
}

#[test]
fn symlink_then_file_through_it_is_refused() {
    let scratch_outside = "/tmp";
    refused(
        &base()
            .symlink("checkpoint/escape", scratch_outside)
            .file("checkpoint/escape/podrestore-owned", b"owned")
            .finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/escape" is a symbolic link; only regular files and directories are allowed"#,
    );
    assert!(!Path::new("/tmp/podrestore-owned").exists());
}

#[test]
fn hardlink_to_outside_is_refused() {
    refused(
        &base().hardlink("passwd", "/etc/passwd").finish(),
        &Limits::default(),
        r#"archive entry "passwd" is a hard link; only regular files and directories are allowed"#,
    );
    refused(
        &base().hardlink("sentinel", "../outside/sentinel").finish(),
        &Limits::default(),
        r#"archive entry "sentinel" is a hard link; only regular files and directories are allowed"#,
    );
}

#[test]
fn devices_and_pipes_are_refused() {
    refused(
        &base().chardev("checkpoint/null").finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/null" is a character device; only regular files and directories are allowed"#,
    );
    refused(
        &base().raw(b"disk", b'4', b"", 0, b"").finish(),
        &Limits::default(),
        r#"archive entry "disk" is a block device; only regular files and directories are allowed"#,
    );
    refused(
        &base().fifo("pipe").finish(),
        &Limits::default(),
        r#"archive entry "pipe" is a named pipe; only regular files and directories are allowed"#,
    );
    refused(
        &base().raw(b"sparse", b'S', b"", 0, b"").finish(),
        &Limits::default(),
        r#"archive entry "sparse" is a GNU sparse file; only regular files and directories are allowed"#,
    );
}

#[test]
fn oversized_file_is_refused_before_it_is_read() {
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    refused(
        &base().file("checkpoint/pages-1.img", &[7u8; 2048]).finish(),
        &limits,
        r#"archive entry "checkpoint/pages-1.img" is 2048 bytes, more than the per-file limit of 1024 bytes"#,
    );
    // A header that claims an exabyte with no data behind it: refused on the
    // claim, with the default limits.
    refused(
        &base()
            .raw(b"checkpoint/pages-1.img", b'0', b"", 1 << 60, b"")
            .finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/pages-1.img" is 1152921504606846976 bytes, more than the per-file limit of 274877906944 bytes"#,
    );
}

#[test]
fn total_size_cap() {
    let limits = Limits {
        max_total_bytes: 3000,
        ..Limits::default()
    };
    refused(
        &base()
            .file("checkpoint/pages-1.img", &[1u8; 1500])
            .file("checkpoint/pages-2.img", &[2u8; 1500])
            .finish(),
        &limits,
        r#"archive entry "checkpoint/pages-2.img" takes the extracted size past the limit of 3000 bytes"#,
    );
}

#[test]
fn too_many_files_are_refused() {
    let mut tar = base();
    for i in 0..50 {
        tar.file(&format!("checkpoint/core-{i}.img"), b"x");
    }
    let limits = Limits {
        max_entries: 20,
        ..Limits::default()
    };
    refused(
        &tar.finish(),
        &limits,
        "archive has more than 20 tar headers",
    );
}

#[test]
fn deep_and_long_paths_are_refused() {
    let deep = "d/".repeat(70) + "f";
    refused(
        &base().file(&deep, b"x").finish(),
        &Limits::default(),
        &format!("archive entry {deep:?} is nested 71 levels deep, more than the limit of 64"),
    );
    let long_component = "n".repeat(300);
    refused(
        &base().file(&long_component, b"x").finish(),
        &Limits::default(),
        &format!(
            "archive entry {long_component:?} has a path component of 300 bytes, more than the limit of 255"
        ),
    );
}

#[test]
fn huge_spec_dump_is_refused() {
    let limits = Limits {
        max_metadata_bytes: 4096,
        ..Limits::default()
    };
    let huge = format!(
        r#"{{"ociVersion":"1.2.0","annotations":{{"pad":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    let mut tar = RawTar::new();
    tar.file("config.dump", CONFIG.as_bytes())
        .file("spec.dump", huge.as_bytes());
    refused(
        &tar.finish(),
        &limits,
        &format!(
            "archive entry \"spec.dump\" is {} bytes, more than the limit of 4096 bytes for metadata files",
            huge.len()
        ),
    );
}

#[test]
fn bad_json_in_spec_dump_is_refused_and_cleaned_up() {
    let scratch = Scratch::new();
    let archive = scratch.path().join("bad.tar");
    let mut tar = RawTar::new();
    tar.file("config.dump", CONFIG.as_bytes()).file(
        "spec.dump",
        br#"{"ociVersion": "1.2.0", "mounts": [{"destination": 42}]}"#,
    );
    fs::write(&archive, tar.finish()).expect("write archive");
    let before = snapshot(scratch.path());
    let err =
        extract_checkpoint(&archive, &scratch.dest(), &Limits::default()).expect_err("bad json");
    assert!(
        err.to_string()
            .starts_with("spec.dump is not valid: invalid type: integer `42`, expected a string"),
        "{err}"
    );
    assert!(!scratch.dest().exists());
    assert_eq!(snapshot(scratch.path()), before);
}

#[test]
fn a_spec_asking_for_devices_is_refused_by_extract_checkpoint() {
    let scratch = Scratch::new();
    let archive = scratch.path().join("dev.tar");
    let mut tar = RawTar::new();
    tar.file("config.dump", CONFIG.as_bytes()).file(
        "spec.dump",
        br#"{"mounts": [{"destination": "/host", "type": "bind", "source": "/dev/sda", "options": ["rbind"]}]}"#,
    );
    fs::write(&archive, tar.finish()).expect("write archive");
    let err =
        extract_checkpoint(&archive, &scratch.dest(), &Limits::default()).expect_err("device");
    assert_eq!(
        err.to_string(),
        r#"checkpoint asks for what a restore does not grant: mount at "/host" binds the device "/dev/sda""#
    );
    assert!(!scratch.dest().exists());
}

#[test]
fn duplicates_and_files_as_parents_are_refused() {
    refused(
        &base().file("checkpoint/inventory.img", b"again").finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/inventory.img" appears more than once"#,
    );
    refused(
        &base().file("checkpoint/inventory.img/child", b"x").finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/inventory.img/child" lies below something that is not a directory"#,
    );
    refused(
        &base().dir("checkpoint/inventory.img").finish(),
        &Limits::default(),
        r#"archive entry "checkpoint/inventory.img" appears more than once"#,
    );
}

#[test]
fn truncated_and_garbage_archives_are_refused() {
    let good = base().finish();
    refused(
        &good[..700],
        &Limits::default(),
        "archive is truncated at byte 700",
    );
    refused(
        b"this is not a tar archive, it is a sentence that is long enough to fill...............................................................................................................................................................................................................................................................................................................................................................................................................................................................................",
        &Limits::default(),
        "malformed tar archive at byte 0: header checksum mismatch (not a tar archive, or corrupt)",
    );
}

#[test]
fn gzip_bomb_is_stopped_by_the_caps() {
    use flate2::{Compression, write::GzEncoder};
    let mut tar = base();
    tar.file("checkpoint/pages-1.img", &vec![0u8; 4 << 20]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&tar.finish()).expect("compress");
    let gz = gz.finish().expect("compress");
    assert!(gz.len() < 64 * 1024, "compresses well: {}", gz.len());
    let limits = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    refused(
        &gz,
        &limits,
        r#"archive entry "checkpoint/pages-1.img" takes the extracted size past the limit of 1048576 bytes"#,
    );
}

#[test]
fn destination_must_be_fresh() {
    let scratch = Scratch::new();
    let err =
        extract(&base().finish()[..], &scratch.outside(), &Limits::default()).expect_err("exists");
    assert_eq!(
        err.to_string(),
        format!(
            "extraction directory {} already exists; extraction needs a fresh directory",
            scratch.outside().display()
        )
    );
    assert_eq!(
        fs::read(scratch.outside().join("sentinel")).expect("read"),
        b"untouched"
    );
}

#[test]
fn good_archive_extracts_private_and_hashed() {
    let scratch = Scratch::new();
    let data = base()
        .file("checkpoint/pages-1.img", &[9u8; 5000])
        .file("deep/er/file", b"implicit parents")
        .finish();
    let extracted = extract(&data[..], &scratch.dest(), &Limits::default()).expect("extracts");
    assert_eq!(extracted.digest.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(extracted.digest.size, data.len() as u64);
    assert_eq!(extracted.counts.files, 5);
    let mode = |p: &Path| fs::symlink_metadata(p).expect("lstat").permissions().mode() & 0o7777;
    let dest = scratch.dest();
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&dest.join("checkpoint")), 0o700);
    assert_eq!(mode(&dest.join("deep/er")), 0o700);
    assert_eq!(mode(&dest.join("config.dump")), 0o600);
    assert_eq!(
        fs::read(dest.join("checkpoint/pages-1.img")).expect("read"),
        vec![9u8; 5000]
    );
    let metadata = CheckpointMetadata::from_dir(&dest, &Limits::default()).expect("metadata");
    assert_eq!(metadata.config.name, "counter");
    assert_eq!(metadata.spec.identity().pod_name.as_deref(), Some("pod-a"));
}
