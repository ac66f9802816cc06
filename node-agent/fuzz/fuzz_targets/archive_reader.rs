//! Feeds arbitrary bytes to the archive reader three ways: the in-memory
//! summary `inspect` uses, extraction into a fresh directory, and layer
//! application into a root. None may panic, and whatever they do, nothing
//! but regular files and directories may appear from extraction, and
//! nothing outside the directories given may change.

#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use podrestore_agent::archive::layer::{LayerOptions, Specials, apply_layer};
use podrestore_agent::archive::summary::summarize;
use podrestore_agent::archive::{Limits, extract};

/// Small caps keep each run fast; the logic is the same at any size.
fn limits() -> Limits {
    Limits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 256 << 10,
        max_archive_bytes: 4 << 20,
        max_entries: 512,
        max_depth: 16,
        max_path_bytes: 1024,
        max_metadata_bytes: 64 << 10,
        max_image_bytes: 64 << 10,
        max_scan_memory_bytes: 1 << 20,
    }
}

/// Every path below `dir`, failing on anything that is not a regular file
/// or directory.
fn only_files_and_dirs(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let meta = fs::symlink_metadata(entry.path()).expect("lstat");
        if meta.is_dir() {
            only_files_and_dirs(&entry.path());
        } else {
            assert!(meta.is_file(), "extraction created {:?}", entry.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let _ = summarize(data, &limits);

    let scratch = tempfile::tempdir().expect("tempdir");
    let outside = scratch.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(outside.join("sentinel"), b"untouched").expect("write");

    let dest = scratch.path().join("dest");
    match extract(data, &dest, &limits) {
        Ok(_) => only_files_and_dirs(&dest),
        Err(_) => assert!(!dest.exists(), "failed extraction left {dest:?}"),
    }

    let root = scratch.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    let options = LayerOptions {
        specials: Specials::Skip,
        preserve_ownership: false,
    };
    let _ = apply_layer(data, &root, &limits, &options);

    let names: Vec<_> = fs::read_dir(scratch.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        names.len() <= 3,
        "something appeared next to the roots: {names:?}"
    );
    assert_eq!(fs::read_dir(&outside).expect("list").count(), 1);
    assert_eq!(
        fs::read(outside.join("sentinel")).expect("read"),
        b"untouched"
    );
});
