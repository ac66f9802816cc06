//! Thousands of mutated archives through every reader, in the ordinary test
//! run (the libFuzzer target in `node-agent/fuzz` explores further, for a
//! bounded time, when `node-agent/fuzz/run.sh` runs). No input may panic,
//! a failed extraction leaves nothing behind, a successful one holds only
//! regular files and directories, and nothing outside changes.

mod archive_support;

use std::fs;
use std::io::Write;
use std::path::Path;

use archive_support::{CONFIG, RawTar, SPEC, Scratch, snapshot};
use podrestore_agent::archive::layer::{LayerOptions, Specials, apply_layer};
use podrestore_agent::archive::summary::summarize;
use podrestore_agent::archive::{Limits, extract};

/// xorshift64*: a fixed seed keeps failures reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut checkpoint = RawTar::new();
    checkpoint
        .file("config.dump", CONFIG.as_bytes())
        .file("spec.dump", SPEC.as_bytes())
        .dir("checkpoint/")
        .file(
            "checkpoint/pstree.img",
            b"\x19\x43\x56\x54\x30\x30\x27\x50\x02\x00\x00\x00\x08\x01",
        )
        .file("checkpoint/pages-1.img", &[0xaa; 1500])
        .file(&format!("checkpoint/{}", "long".repeat(40)), b"long name");
    let mut layer = RawTar::new();
    layer
        .dir("etc/")
        .file("etc/motd", b"hi")
        .symlink("lib", "usr/lib")
        .hardlink("etc/motd2", "etc/motd")
        .file("etc/.wh.hosts", b"")
        .chardev("dev/null");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&checkpoint.finish()).expect("compress");
    vec![
        checkpoint.finish(),
        layer.finish(),
        gz.finish().expect("compress"),
    ]
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        if data.is_empty() {
            return;
        }
        let at = rng.below(data.len());
        match rng.below(7) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => {
                data[at] = [0, 0xff, b'/', b'.', b'0', b'7', b'2', b'1', b'L', b'x'][rng.below(10)]
            }
            2 => data.truncate(at),
            3 => {
                let len = rng.below(64).min(data.len() - at);
                let chunk = data[at..at + len].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, chunk);
            }
            4 => {
                // Rewrite a size field with a random octal number.
                let block = at / 512 * 512;
                if block + 136 <= data.len() {
                    let size = format!("{:011o}", rng.next() % (1 << 33));
                    data[block + 124..block + 135].copy_from_slice(size.as_bytes());
                }
            }
            5 => {
                // Re-fix the header checksum so mutations get past it.
                let block = at / 512 * 512;
                if block + 512 <= data.len() {
                    let h = &mut data[block..block + 512];
                    h[148..156].copy_from_slice(b"        ");
                    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
                    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
                }
            }
            _ => {
                let name = [
                    &b"../x"[..],
                    b"/etc/x",
                    b"a/../../b",
                    b"./",
                    b"checkpoint/..",
                ][rng.below(5)];
                let block = at / 512 * 512;
                if block + 100 <= data.len() {
                    data[block..block + 100].fill(0);
                    data[block..block + name.len()].copy_from_slice(name);
                }
            }
        }
    }
}

fn only_files_and_dirs(dir: &Path) {
    for entry in fs::read_dir(dir).expect("list").flatten() {
        let meta = fs::symlink_metadata(entry.path()).expect("lstat");
        if meta.is_dir() {
            only_files_and_dirs(&entry.path());
        } else {
            assert!(meta.is_file(), "extraction created {:?}", entry.path());
        }
    }
}

#[test]
fn mutated_archives_never_escape_or_panic() {
    let limits = Limits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 256 << 10,
        max_entries: 256,
        max_metadata_bytes: 64 << 10,
        ..Limits::default()
    };
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let scratch = Scratch::new();
    let outside_before = snapshot(&scratch.outside());
    let (mut extracted, mut refused) = (0, 0);
    for round in 0..2000 {
        let mut data = seeds[round % seeds.len()].clone();
        mutate(&mut rng, &mut data);
        let _ = summarize(&data[..], &limits);
        let dest = scratch.path().join(format!("dest-{round}"));
        match extract(&data[..], &dest, &limits) {
            Ok(_) => {
                extracted += 1;
                only_files_and_dirs(&dest);
                fs::remove_dir_all(&dest).expect("cleanup");
            }
            Err(_) => {
                refused += 1;
                assert!(
                    !dest.exists(),
                    "round {round}: failed extraction left {dest:?}"
                );
            }
        }
        let root = scratch.path().join(format!("root-{round}"));
        fs::create_dir(&root).expect("mkdir");
        let options = LayerOptions {
            specials: Specials::Skip,
            preserve_ownership: false,
        };
        let _ = apply_layer(&data[..], &root, &limits, &options);
        fs::remove_dir_all(&root).expect("cleanup");
    }
    assert_eq!(snapshot(&scratch.outside()), outside_before);
    let left: Vec<_> = fs::read_dir(scratch.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["outside"], "stray files next to the roots");
    // Both outcomes must have been exercised for the test to mean anything.
    assert!(
        extracted > 100 && refused > 100,
        "{extracted} extracted, {refused} refused"
    );
}
