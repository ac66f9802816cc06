//! The writer: archives round-trip through the reader and are deterministic.

mod archive_support;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use archive_support::{CONFIG, SPEC, Scratch};
use podrestore_agent::archive::metadata::parse_config;
use podrestore_agent::archive::summary::summarize_file;
use podrestore_agent::archive::writer::{CheckpointContents, write_archive_file};
use podrestore_agent::archive::{Limits, extract_checkpoint};
use sha2::{Digest, Sha256};

fn fake_images(dir: &std::path::Path) {
    fs::create_dir_all(dir).expect("mkdir");
    for (name, body) in [
        ("inventory.img", &b"inv"[..]),
        ("pstree.img", b"ps"),
        ("core-1.img", b"core"),
        ("pages-1.img", &[5u8; 10_000]),
        (
            "descriptors.json",
            br#"["/dev/null","pipe:[1]","pipe:[2]"]"#,
        ),
    ] {
        fs::write(dir.join(name), body).expect("write image");
    }
}

#[test]
fn written_archive_round_trips_and_is_deterministic() {
    let scratch = Scratch::new();
    let images = scratch.path().join("images");
    fake_images(&images);
    let rootfs_diff = scratch.path().join("rootfs-diff.tar");
    fs::write(&rootfs_diff, vec![0u8; 1024]).expect("write diff");
    let log = scratch.path().join("dump.log");
    fs::write(&log, "(00.000000) Version: 4.2.1 (gitid 0)\n").expect("write log");
    let config = parse_config(CONFIG.as_bytes()).expect("config");
    let contents = CheckpointContents {
        images_dir: &images,
        config: &config,
        spec_dump: SPEC.as_bytes(),
        rootfs_diff: Some(&rootfs_diff),
        dump_log: Some(&log),
        stats_dump: None,
        extra_files: vec![("status.dump".into(), log.clone())],
    };
    let first = scratch.path().join("one.tar");
    let second = scratch.path().join("two.tar");
    let digest = write_archive_file(&contents, &first).expect("writes");
    let again = write_archive_file(&contents, &second).expect("writes");
    assert_eq!(digest, again, "same inputs, same archive");
    let bytes = fs::read(&first).expect("read");
    assert_eq!(digest.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(digest.size, bytes.len() as u64);
    assert_eq!(
        fs::metadata(&first).expect("stat").permissions().mode() & 0o777,
        0o600
    );

    // Entry order: metadata first, then the images sorted, then the diff.
    let mut archive = tar::Archive::new(&bytes[..]);
    let names: Vec<String> = archive
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "config.dump",
            "spec.dump",
            "dump.log",
            "status.dump",
            "checkpoint",
            "checkpoint/core-1.img",
            "checkpoint/descriptors.json",
            "checkpoint/inventory.img",
            "checkpoint/pages-1.img",
            "checkpoint/pstree.img",
            "rootfs-diff.tar",
        ]
    );

    let dest = scratch.path().join("extracted");
    let checkpoint = extract_checkpoint(&first, &dest, &Limits::default()).expect("extracts");
    assert_eq!(checkpoint.extracted.digest, digest);
    assert_eq!(checkpoint.metadata.config, config);
    assert_eq!(checkpoint.metadata.criu_version.as_deref(), Some("4.2.1"));
    assert_eq!(
        checkpoint.metadata.descriptors.as_deref(),
        Some(
            &[
                "/dev/null".to_string(),
                "pipe:[1]".into(),
                "pipe:[2]".into()
            ][..]
        )
    );
    for name in ["inventory.img", "pages-1.img", "descriptors.json"] {
        assert_eq!(
            fs::read(dest.join("checkpoint").join(name)).expect("read extracted"),
            fs::read(images.join(name)).expect("read source"),
            "{name}"
        );
    }

    let summary = summarize_file(&first, &Limits::default()).expect("summarizes");
    assert_eq!(summary.archive, digest);
    assert_eq!(summary.pod.pod_name.as_deref(), Some("pod-a"));
    assert_eq!(summary.sizes.pages_bytes, 10_000);
    assert_eq!(summary.sizes.rootfs_diff_bytes, 1024);
}

#[test]
fn writer_refuses_symlinks_and_existing_files() {
    let scratch = Scratch::new();
    let images = scratch.path().join("images");
    fake_images(&images);
    symlink("/etc/shadow", images.join("sneaky.img")).expect("symlink");
    let config = parse_config(CONFIG.as_bytes()).expect("config");
    let contents = CheckpointContents {
        images_dir: &images,
        config: &config,
        spec_dump: SPEC.as_bytes(),
        rootfs_diff: None,
        dump_log: None,
        stats_dump: None,
        extra_files: vec![],
    };
    let out = scratch.path().join("out.tar");
    let err = write_archive_file(&contents, &out).expect_err("symlink");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a regular file or directory; only those are archived",
            images.join("sneaky.img").display()
        )
    );
    assert!(!out.exists(), "partial archive removed");
    fs::remove_file(images.join("sneaky.img")).expect("rm");
    let existing = scratch.outside().join("sentinel");
    let err = write_archive_file(&contents, &existing).expect_err("exists");
    assert!(err.to_string().starts_with("creating archive"), "{err}");
    assert_eq!(fs::read(&existing).expect("read"), b"untouched");
    let bad_spec = CheckpointContents {
        spec_dump: b"{not json",
        ..contents.clone()
    };
    let err = write_archive_file(&bad_spec, &out).expect_err("bad spec");
    assert!(
        err.to_string().starts_with("spec.dump is not valid"),
        "{err}"
    );
    let bad_extra = CheckpointContents {
        extra_files: vec![("../x".into(), existing.clone())],
        ..contents
    };
    let err = write_archive_file(&bad_extra, &out).expect_err("bad name");
    assert_eq!(
        err.to_string(),
        "\"../x\" cannot be an extra file name: it must be one plain path component and not a name the archive format reserves"
    );
}
