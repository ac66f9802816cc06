//! `podrestore-agent inspect`: what a checkpoint archive holds, read without
//! extracting it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use podrestore_agent::archive::Limits;
use podrestore_agent::archive::summary::{ArchiveSummary, summarize_file};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    Table,
    /// One JSON object for programs.
    Json,
}

/// Arguments of `podrestore-agent inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint archive (uncompressed or gzip-compressed tar).
    #[arg(value_name = "ARCHIVE")]
    archive: PathBuf,
    /// Output format.
    #[arg(
        long,
        short = 'o',
        value_enum,
        default_value = "table",
        env = "PODRESTORE_INSPECT_OUTPUT"
    )]
    output: Output,
}

/// Runs `podrestore-agent inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let summary = summarize_file(&args.archive, &Limits::default())
        .with_context(|| format!("inspecting {}", args.archive.display()))?;
    let text = match args.output {
        Output::Json => {
            let mut json = serde_json::to_string_pretty(&summary)?;
            json.push('\n');
            json
        }
        Output::Table => table(&args.archive, &summary),
    };
    print!("{text}");
    Ok(())
}

/// Values from the archive are untrusted: control characters are escaped so
/// they cannot drive the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
            if c.is_control() {
                Box::new(c.escape_default())
            } else {
                Box::new(std::iter::once(c))
            }
        })
        .collect()
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "-".to_string(), clean)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Deepest indentation printed for the process tree.
const MAX_INDENT: usize = 16;

fn table(path: &std::path::Path, s: &ArchiveSummary) -> String {
    let mut out = String::new();
    let mut row = |key: &str, value: String| {
        let _ = writeln!(out, "{:<17} {value}", format!("{key}:"));
    };
    row("Archive", clean(&path.display().to_string()));
    row("SHA-256", s.archive.sha256.clone());
    row(
        "Archive size",
        format!("{} ({} bytes)", human(s.archive.size), s.archive.size),
    );
    let c = &s.container;
    row(
        "Container",
        format!(
            "{} (id {}, runtime {})",
            opt(&s
                .pod
                .container_name
                .clone()
                .or_else(|| Some(c.name.clone()).filter(|n| !n.is_empty()))),
            if c.id.is_empty() {
                "-".to_string()
            } else {
                clean(&c.id)
            },
            if c.runtime.is_empty() {
                "-".to_string()
            } else {
                clean(&c.runtime)
            },
        ),
    );
    let pod = match (&s.pod.pod_namespace, &s.pod.pod_name) {
        (Some(ns), Some(name)) => format!("{}/{}", clean(ns), clean(name)),
        (None, Some(name)) => clean(name),
        _ => "-".to_string(),
    };
    row("Pod", pod);
    row("Namespace", opt(&s.pod.pod_namespace));
    row("Pod UID", opt(&s.pod.pod_uid));
    row("Engine", s.pod.engine.to_string());
    row(
        "Image",
        if c.rootfs_image_name.is_empty() {
            "-".to_string()
        } else {
            clean(&c.rootfs_image_name)
        },
    );
    row("Created", opt(&c.created_time));
    row("Checkpointed", opt(&c.checkpointed_time));
    row("CRIU version", opt(&s.criu_version));
    row(
        "Image size",
        format!(
            "{} (memory pages {})",
            human(s.sizes.checkpoint_bytes),
            human(s.sizes.pages_bytes)
        ),
    );
    row(
        "Root fs diff",
        if s.sizes.rootfs_diff_bytes == 0 {
            "-".to_string()
        } else {
            human(s.sizes.rootfs_diff_bytes)
        },
    );
    if let Some(p) = &s.process {
        row(
            "Command",
            format!(
                "{} (cwd {}, {} environment variables)",
                clean(&p.args.join(" ")),
                clean(&p.cwd),
                p.env_count
            ),
        );
    }
    let namespaces: Vec<String> = s
        .namespaces
        .iter()
        .map(|n| match &n.path {
            Some(path) => format!("{} ({})", clean(&n.kind), clean(path)),
            None => clean(&n.kind),
        })
        .collect();
    row(
        "Namespaces",
        if namespaces.is_empty() {
            "-".to_string()
        } else {
            namespaces.join(", ")
        },
    );
    let binds: Vec<String> = s
        .mounts
        .bind_mounts
        .iter()
        .map(|m| {
            let ro = if m.read_only { " (ro)" } else { "" };
            format!("{}{ro}", clean(&m.destination))
        })
        .collect();
    row(
        "Bind mounts",
        if binds.is_empty() {
            "-".to_string()
        } else {
            binds.join(", ")
        },
    );
    row(
        "Restore policy",
        match s.mounts.ensure_restorable() {
            Ok(()) => "ok".to_string(),
            Err(e) => clean(&e.to_string()),
        },
    );
    if let Some(d) = &s.dump_stats {
        row(
            "Dump",
            format!(
                "frozen {} ms, {} pages written",
                d.frozen_time.unwrap_or(0) as f64 / 1000.0,
                d.pages_written.unwrap_or(0)
            ),
        );
    }
    let _ = writeln!(out, "Processes:");
    if s.processes.is_empty() {
        let _ = writeln!(out, "  -");
    } else {
        let _ = writeln!(out, "  {:<8} {:<8} {:<8} COMMAND", "PID", "PPID", "THREADS");
        for p in &s.processes {
            let indent = "  ".repeat(p.depth.min(MAX_INDENT));
            let _ = writeln!(
                out,
                "  {:<8} {:<8} {:<8} {indent}{}",
                p.pid,
                p.ppid,
                p.threads,
                opt(&p.comm)
            );
        }
    }
    if !s.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for w in &s.warnings {
            let _ = writeln!(out, "  - {}", clean(w));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(181_248), "177.0 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }
}
