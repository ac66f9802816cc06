//! Applying a container's writable layer (`rootfs-diff.tar`) to a root file
//! system: symbolic links in the layer or already in the root never carry a
//! write outside, whiteouts remove only below the root.

mod archive_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use archive_support::{RawTar, Scratch, snapshot};
use podrestore_agent::archive::Limits;
use podrestore_agent::archive::layer::{LayerOptions, Specials, apply_layer, remove_deleted_files};

/// A scratch area with `root/` as the container root.
fn setup() -> Scratch {
    let scratch = Scratch::new();
    fs::create_dir(scratch.path().join("root")).expect("mkdir root");
    scratch
}

/// Applies `layer` to `root/` expecting `want`, and checks that nothing
/// outside `root/` changed.
fn refused(scratch: &Scratch, layer: &[u8], want: &str) {
    let outside_before = snapshot(&scratch.outside());
    let err = apply_layer(
        layer,
        &scratch.path().join("root"),
        &Limits::default(),
        &LayerOptions::default(),
    )
    .expect_err(want);
    assert_eq!(err.to_string(), want);
    assert_eq!(
        snapshot(&scratch.outside()),
        outside_before,
        "outside changed"
    );
}

#[test]
fn symlink_in_layer_is_created_but_never_followed() {
    let scratch = setup();
    let outside = scratch.outside().display().to_string();
    let mut tar = RawTar::new();
    tar.symlink("escape", &outside)
        .file("escape/owned", b"owned");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "escape/owned" lies below a symbolic link; symbolic links are never followed"#,
    );
    assert!(!scratch.outside().join("owned").exists());
    // The link itself was created, as the layer asked.
    let link = fs::read_link(scratch.path().join("root/escape")).expect("symlink created");
    assert_eq!(link.display().to_string(), outside);
}

#[test]
fn symlink_planted_in_the_root_is_never_followed() {
    let scratch = setup();
    symlink(scratch.outside(), scratch.path().join("root/lib")).expect("plant");
    let mut tar = RawTar::new();
    tar.file("lib/libc.so.6", b"evil");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "lib/libc.so.6" lies below a symbolic link; symbolic links are never followed"#,
    );
    // A whiteout through the planted link cannot delete outside either.
    let mut tar = RawTar::new();
    tar.file("lib/.wh.sentinel", b"");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "lib/.wh.sentinel" lies below a symbolic link; symbolic links are never followed"#,
    );
    // Replacing the planted link with a file removes the link, not its target.
    let mut tar = RawTar::new();
    tar.file("lib", b"now a file");
    apply_layer(
        &tar.finish()[..],
        &scratch.path().join("root"),
        &Limits::default(),
        &LayerOptions::default(),
    )
    .expect("applies");
    assert_eq!(
        fs::read(scratch.path().join("root/lib")).expect("read"),
        b"now a file"
    );
    assert_eq!(
        fs::read(scratch.outside().join("sentinel")).expect("read"),
        b"untouched"
    );
}

#[test]
fn traversal_and_absolute_paths_are_refused() {
    let scratch = setup();
    let mut tar = RawTar::new();
    tar.file("../outside/sentinel", b"owned");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "../outside/sentinel" escapes the extraction root"#,
    );
    let mut tar = RawTar::new();
    tar.file("/etc/podrestore-layer-test", b"owned");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "/etc/podrestore-layer-test" is an absolute path; entries must be relative to the archive root"#,
    );
    assert!(!Path::new("/etc/podrestore-layer-test").exists());
}

#[test]
fn hardlinks_only_to_regular_files_below_the_root() {
    let scratch = setup();
    let mut tar = RawTar::new();
    tar.hardlink("h", "../outside/sentinel");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "../outside/sentinel" escapes the extraction root"#,
    );
    let mut tar = RawTar::new();
    tar.hardlink("h", "/etc/passwd");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "/etc/passwd" is an absolute path; entries must be relative to the archive root"#,
    );
    // A link to a planted symlink that points outside.
    symlink(
        scratch.outside().join("sentinel"),
        scratch.path().join("root/planted"),
    )
    .expect("plant");
    let mut tar = RawTar::new();
    tar.hardlink("h", "planted");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "h" is a hard link to "planted", which is not a regular file in the archive"#,
    );
    assert!(!scratch.path().join("root/h").exists());
    // A proper one works and shares the inode.
    let mut tar = RawTar::new();
    tar.file("bin/busybox", b"#!")
        .hardlink("bin/sh", "bin/busybox");
    apply_layer(
        &tar.finish()[..],
        &scratch.path().join("root"),
        &Limits::default(),
        &LayerOptions::default(),
    )
    .expect("applies");
    let a = fs::metadata(scratch.path().join("root/bin/busybox")).expect("stat");
    let b = fs::metadata(scratch.path().join("root/bin/sh")).expect("stat");
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn devices_are_refused_or_skipped_and_reported() {
    let scratch = setup();
    let mut tar = RawTar::new();
    tar.chardev("dev/evil");
    refused(
        &scratch,
        &tar.finish(),
        r#"archive entry "dev/evil" is a character device; device nodes and named pipes are not created"#,
    );
    let mut tar = RawTar::new();
    tar.chardev("dev/evil").fifo("run/pipe").file("ok", b"fine");
    let report = apply_layer(
        &tar.finish()[..],
        &scratch.path().join("root"),
        &Limits::default(),
        &LayerOptions {
            specials: Specials::Skip,
            ..LayerOptions::default()
        },
    )
    .expect("applies");
    let skipped: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [("dev/evil", "character device"), ("run/pipe", "named pipe")]
    );
    assert!(!scratch.path().join("root/dev/evil").exists());
    assert!(scratch.path().join("root/ok").exists());
}

#[test]
fn whiteouts_remove_below_the_root_only() {
    let scratch = setup();
    let root = scratch.path().join("root");
    fs::write(root.join("old"), b"x").expect("write");
    fs::create_dir_all(root.join("d/sub")).expect("mkdir");
    fs::write(root.join("d/keep-not"), b"x").expect("write");
    fs::write(root.join("d/sub/deep"), b"x").expect("write");
    symlink(scratch.outside(), root.join("link-to-outside")).expect("plant");
    let mut tar = RawTar::new();
    tar.file(".wh.old", b"")
        .file(".wh.link-to-outside", b"")
        .dir("d/")
        .file("d/new", b"from layer")
        .file("d/.wh..wh..opq", b"")
        .file(".wh.never-existed", b"");
    let report = apply_layer(
        &tar.finish()[..],
        &root,
        &Limits::default(),
        &LayerOptions::default(),
    )
    .expect("applies");
    assert_eq!(report.whiteouts, 4);
    assert!(!root.join("old").exists());
    assert!(fs::symlink_metadata(root.join("link-to-outside")).is_err());
    assert_eq!(
        fs::read(scratch.outside().join("sentinel")).expect("read"),
        b"untouched"
    );
    let mut left: Vec<String> = fs::read_dir(root.join("d"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["new"]);
}

#[test]
fn whiteouts_cannot_name_the_directory_or_its_parent() {
    let scratch = setup();
    let root = scratch.path().join("root");
    fs::create_dir(root.join("d")).expect("mkdir");
    fs::write(root.join("d/keep"), b"x").expect("write");
    for (name, shown) in [
        ("d/.wh..", r#""d/.wh..""#),
        ("d/.wh...", r#""d/.wh...""#),
        ("d/.wh.", r#""d/.wh.""#),
    ] {
        let mut tar = RawTar::new();
        tar.file(name, b"");
        refused(
            &scratch,
            &tar.finish(),
            &format!("archive entry {shown} is a whiteout that names no removable entry"),
        );
    }
    assert!(root.join("d/keep").exists());
}

#[test]
fn modes_owners_and_gzip() {
    use flate2::{Compression, write::GzEncoder};
    let scratch = setup();
    let root = scratch.path().join("root");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    tar.append_data(&mut h, "usr/bin/tool", &b"elf"[..])
        .expect("append");
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_size(0);
    d.set_mode(0o1777);
    tar.append_data(&mut d, "tmp", std::io::empty())
        .expect("append");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar.into_inner().expect("finish"))
        .expect("compress");
    let gz = gz.finish().expect("compress");
    apply_layer(&gz[..], &root, &Limits::default(), &LayerOptions::default()).expect("applies");
    let tool = fs::metadata(root.join("usr/bin/tool")).expect("stat");
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    let tmp = fs::metadata(root.join("tmp")).expect("stat");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
}

#[test]
fn deleted_files_are_removed_without_following_links() {
    let scratch = setup();
    let root = scratch.path().join("root");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/motd"), b"x").expect("write");
    symlink(scratch.outside(), root.join("var")).expect("plant");
    let removed = remove_deleted_files(
        &root,
        &["/etc/motd".to_string(), "/not/there".to_string()],
        &Limits::default(),
    )
    .expect("removes");
    assert_eq!(removed, 1);
    assert!(!root.join("etc/motd").exists());
    let err = remove_deleted_files(&root, &["/var/sentinel".to_string()], &Limits::default())
        .expect_err("through symlink");
    assert_eq!(
        err.to_string(),
        r#"archive entry "/var/sentinel" lies below a symbolic link; symbolic links are never followed"#
    );
    let err = remove_deleted_files(
        &root,
        &["../outside/sentinel".to_string()],
        &Limits::default(),
    )
    .expect_err("escapes");
    assert_eq!(
        err.to_string(),
        r#"archive entry "../outside/sentinel" escapes the extraction root"#
    );
    assert_eq!(
        fs::read(scratch.outside().join("sentinel")).expect("read"),
        b"untouched"
    );
}
