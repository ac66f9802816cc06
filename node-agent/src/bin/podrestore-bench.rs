//! `podrestore-bench`: how long a restore into a pod's namespaces takes, by
//! `runc restore`, by the bare `criu restore` command line with the options runc
//! passes, and by the agent, on the very same checkpoint images.
//!
//! For each workload size a busybox container holding that much touched memory
//! runs in sandbox A (`runc run -d`), is checkpointed by `runc checkpoint`, and
//! its images are restored into sandbox B again and again, each restorer in
//! turn, the restored tree killed between runs. Prints the median, minimum and
//! maximum per restorer and the ratios of the medians. Needs root, runc, CRIU and
//! busybox; `podrestore-pause` is looked up next to this binary.
//!
//! The agent is measured as the node agent runs a restore: a call of its
//! restore library function (`podrestore_agent::restore::restore`) on the
//! images directory, from the plan with runc's rules to the cleanup of its
//! `criu-root` mount and work directory, with the CRIU version asked once
//! beforehand as the agent's service does at startup. `--agent-cmd` times a
//! command line instead ([`agent_restore_command`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use podrestore_agent::criu::{Criu, CriuVersion};
use podrestore_agent::namespaces::Namespace;
use podrestore_agent::restore::{CheckpointSource, RestoreRequest};
use podrestore_agent::sandbox::criu_cli::RestoreCli;
use podrestore_agent::sandbox::runc::{BundleSpec, Runc, remove_cgroup};
use podrestore_agent::sandbox::workload::{prepare_busybox_rootfs, scripts};
use podrestore_agent::sandbox::{
    Sandbox, SandboxConfig, SandboxNs, adopt_orphans, kill_and_reap, procfs, require_tool,
    wait_until,
};

/// Time restores of the same checkpoint by runc, bare CRIU and the agent.
#[derive(Debug, Parser)]
#[command(name = "podrestore-bench", version, about)]
struct Args {
    /// Restores per restorer and workload size.
    #[arg(long, env = "PODRESTORE_BENCH_RUNS", default_value_t = 5)]
    runs: usize,
    /// Workload sizes: touched memory held by the process (`tiny` holds none;
    /// `256M`, `1G`, ...).
    #[arg(
        long,
        env = "PODRESTORE_BENCH_SIZES",
        value_delimiter = ',',
        default_value = "tiny,256M,1G"
    )]
    sizes: Vec<String>,
    /// Where rootfs, images and logs go (a fresh directory under it, removed at
    /// the end unless --keep).
    #[arg(long, env = "PODRESTORE_BENCH_WORK_DIR", default_value = "/var/tmp")]
    work_dir: PathBuf,
    /// The sandbox init; defaults to `podrestore-pause` next to this binary.
    #[arg(long, env = "PODRESTORE_BENCH_PAUSE")]
    pause: Option<PathBuf>,
    /// Time the agent through this shell command template instead of a call of
    /// its restore function; see `agent_restore_command` for the placeholders.
    #[arg(long, env = "PODRESTORE_BENCH_AGENT_CMD")]
    agent_cmd: Option<String>,
    /// Print the results as JSON instead of a table.
    #[arg(long, env = "PODRESTORE_BENCH_JSON")]
    json: bool,
    /// Keep the work directory (images, logs) for inspection.
    #[arg(long, env = "PODRESTORE_BENCH_KEEP")]
    keep: bool,
}

/// One restore target as the restorers see it: what a command template may use.
struct Target<'a> {
    images: &'a Path,
    rootfs: &'a Path,
    bundle: &'a Path,
    work: &'a Path,
    sandbox: &'a Sandbox,
    cgroup: &'a str,
}

/// The hook for the agent: the command that restores `target.images` into
/// `target.sandbox` with `podrestore-agent`, built from `template` by replacing
/// `{images}` (CRIU images dir), `{rootfs}` (the container root, CRIU's
/// `--root`), `{bundle}` (a bundle dir whose `config.json` names the target's
/// namespaces), `{work}` (a fresh work dir), `{cgroup}` (a fresh cgroup path)
/// and `{pid}`, `{net}`, `{ipc}`, `{uts}` (the target's namespace paths). Run by
/// `sh -c`, like the bare CRIU line. The restored tree is found and killed in the
/// target sandbox afterwards, so the command may detach.
///
/// Example: `podrestore-agent restore --images {images} --root {rootfs}
/// --cgroup-root {cgroup} --work-dir {work} --detach --ns pid={pid}
/// --ns network={net} --ns ipc={ipc} --ns uts={uts} --ns mount`
fn agent_restore_command(template: &str, target: &Target<'_>) -> Command {
    let mut line = template.to_owned();
    let text = |path: &Path| path.to_string_lossy().into_owned();
    for (key, value) in [
        ("{images}", text(target.images)),
        ("{rootfs}", text(target.rootfs)),
        ("{bundle}", text(target.bundle)),
        ("{work}", text(target.work)),
        ("{cgroup}", target.cgroup.to_owned()),
        ("{pid}", text(&target.sandbox.ns_path(SandboxNs::Pid))),
        ("{net}", text(&target.sandbox.ns_path(SandboxNs::Network))),
        ("{ipc}", text(&target.sandbox.ns_path(SandboxNs::Ipc))),
        ("{uts}", text(&target.sandbox.ns_path(SandboxNs::Uts))),
    ] {
        line = line.replace(key, &value);
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(line);
    cmd
}

/// The restorers, in the order each run tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restorer {
    Runc,
    Criu,
    Agent,
}

impl Restorer {
    fn label(self) -> &'static str {
        match self {
            Restorer::Runc => "runc restore",
            Restorer::Criu => "criu restore",
            Restorer::Agent => "agent",
        }
    }
}

/// Results for one workload size.
#[derive(Debug, serde::Serialize)]
struct SizeResult {
    workload: String,
    bytes: u64,
    rss_bytes: u64,
    image_bytes: u64,
    runc_ms: Vec<f64>,
    criu_ms: Vec<f64>,
    agent_ms: Vec<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("podrestore-bench creates namespaces and runs CRIU: run it as root");
    }
    for tool in ["busybox", "unshare", "nsenter", "ip", "criu", "runc", "sh"] {
        require_tool(tool)?;
    }
    let pause = match &args.pause {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the binary's directory")?
            .join("podrestore-pause"),
    };
    if !pause.is_file() {
        bail!(
            "{} not found: build it (cargo build -p podrestore-agent --bins) or pass --pause",
            pause.display()
        );
    }
    adopt_orphans()?;
    let sizes = args
        .sizes
        .iter()
        .map(|size| Ok((size.clone(), parse_size(size)?)))
        .collect::<Result<Vec<_>>>()?;

    let scratch = args
        .work_dir
        .join(format!("podrestore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&args.work_dir)?;
    std::fs::create_dir(&scratch).with_context(|| format!("create {}", scratch.display()))?;

    let versions = format!(
        "{}, {}",
        first_line(Command::new("criu").arg("--version"))?.replace("Version:", "CRIU"),
        first_line(Command::new("runc").arg("--version"))?
    );
    let mut results = Vec::new();
    let mut failure = None;
    for (label, bytes) in &sizes {
        eprintln!("== {label}: preparing the checkpoint");
        match bench_size(&args, &pause, &scratch, label, *bytes) {
            Ok(result) => results.push(result),
            Err(err) => {
                failure = Some(err.context(format!("workload {label}")));
                break;
            }
        }
    }
    if args.keep {
        eprintln!("kept {}", scratch.display());
    } else if let Err(err) = std::fs::remove_dir_all(&scratch) {
        eprintln!("cannot remove {}: {err}", scratch.display());
    }
    if let Some(err) = failure {
        return Err(err);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": args.runs,
                "versions": versions,
                "results": results,
            }))?
        );
    } else {
        print_table(&results, args.runs, &versions);
    }
    Ok(())
}

fn bench_size(
    args: &Args,
    pause: &Path,
    scratch: &Path,
    label: &str,
    bytes: u64,
) -> Result<SizeResult> {
    let dir = scratch.join(label);
    let rootfs = dir.join("rootfs");
    prepare_busybox_rootfs(&rootfs, &require_tool("busybox")?)?;
    let source = Sandbox::create(&SandboxConfig::new(format!("bench-{label}-a"), pause))?;
    let target = Sandbox::create(&SandboxConfig::new(format!("bench-{label}-b"), pause))?;
    let runc = Runc::new(dir.join("runc-state"), dir.join("runc-logs"))?;

    let id = format!("bench-{}-{label}", std::process::id()).to_lowercase();
    let script = scripts::memory_holder("/bin/busybox", bytes, "/data/ready", "/data/count", "0.1");
    let bundle = BundleSpec::shell_in_sandbox(&rootfs, &source, &id, &script);
    let source_bundle = bundle.write(&dir.join("bundle-a"))?;
    runc.run_detached(&id, &source_bundle)?;
    let container = Container {
        runc: &runc,
        id: &id,
    };
    let ready = rootfs.join("data/ready");
    // Building the string takes a few seconds per GiB on a busy machine.
    let allow = Duration::from_secs(60 + bytes / (1 << 30) * 120);
    wait_until(format!("{} to be written", ready.display()), allow, || {
        std::fs::read_to_string(&ready).is_ok_and(|text| text.trim().parse::<u64>() == Ok(bytes))
    })?;
    let pid = runc.state(&id)?.pid;
    let rss_bytes = procfs::rss_bytes(pid).unwrap_or_default();
    let images = dir.join("images");
    runc.checkpoint(&id, &images, &dir.join("checkpoint-work"), false)?;
    drop(container);
    let image_bytes = dir_size(&images);
    eprintln!(
        "   rss {} MiB, images {} MiB",
        rss_bytes >> 20,
        image_bytes >> 20
    );

    let mut target_bundle = bundle.clone();
    target_bundle.namespaces = podrestore_agent::sandbox::runc::OciNamespace::for_sandbox(&target);
    let mut result = SizeResult {
        workload: label.to_owned(),
        bytes,
        rss_bytes,
        image_bytes,
        runc_ms: Vec::new(),
        criu_ms: Vec::new(),
        agent_ms: Vec::new(),
    };
    let restorers = [Restorer::Runc, Restorer::Criu, Restorer::Agent];
    let criu_version = Criu::default()
        .version()
        .context("asking CRIU for its version")?;
    for run in 0..args.runs {
        for restorer in &restorers {
            let took = restore_once(
                *restorer,
                args,
                &criu_version,
                &runc,
                &dir,
                &rootfs,
                &images,
                &target_bundle,
                &target,
                run,
            )
            .with_context(|| format!("{} run {}", restorer.label(), run + 1))?;
            let ms = took.as_secs_f64() * 1000.0;
            eprintln!("   run {} {:<13} {ms:8.1} ms", run + 1, restorer.label());
            match restorer {
                Restorer::Runc => result.runc_ms.push(ms),
                Restorer::Criu => result.criu_ms.push(ms),
                Restorer::Agent => result.agent_ms.push(ms),
            }
        }
    }
    source.teardown()?;
    target.teardown()?;
    Ok(result)
}

/// Removes a container and its cgroup when dropped, however the bench ends.
struct Container<'a> {
    runc: &'a Runc,
    id: &'a str,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.runc.remove(self.id) {
            eprintln!("{err}");
        }
        let _ = remove_cgroup(&format!("/podrestore-{}", self.id));
    }
}

/// One timed restore into `target`, checked to have landed there, then killed.
#[allow(clippy::too_many_arguments)]
fn restore_once(
    restorer: Restorer,
    args: &Args,
    criu_version: &CriuVersion,
    runc: &Runc,
    dir: &Path,
    rootfs: &Path,
    images: &Path,
    bundle: &BundleSpec,
    target: &Sandbox,
    run: usize,
) -> Result<Duration> {
    let tag = match restorer {
        Restorer::Runc => "runc",
        Restorer::Criu => "criu",
        Restorer::Agent => "agent",
    };
    let id = format!("{tag}-{}-{run}", std::process::id());
    let cgroup = format!("/podrestore-{id}");
    let work = dir.join(format!("work-{id}"));
    let took = match restorer {
        Restorer::Runc => {
            let mut spec = bundle.clone();
            spec.cgroups_path = cgroup.clone();
            let bundle_dir = spec.write(&dir.join(format!("bundle-{id}")))?;
            let took = runc.restore_detached(&id, &bundle_dir, images, &work)?;
            check_landed(runc.state(&id)?.pid, target)?;
            runc.remove(&id)?;
            took
        }
        Restorer::Criu => {
            let mut restore = RestoreCli::into_sandbox(images, &work, target);
            restore.root = Some(rootfs.to_path_buf());
            restore.cgroup_root = Some(cgroup.clone());
            let restored = restore.run()?;
            check_landed(restored.pid, target)?;
            kill_and_reap(restored.pid, Duration::from_secs(30))?;
            restored.took
        }
        Restorer::Agent if args.agent_cmd.is_none() => {
            std::fs::create_dir_all(&work)?;
            let request = RestoreRequest {
                source: CheckpointSource::Images(images.to_path_buf()),
                namespaces: agent_namespaces(target)?,
                root: Some(rootfs.to_path_buf()),
                cgroup_root: Some(cgroup.clone()),
                work_root: work.clone(),
                criu_version: Some(criu_version.clone()),
                ..RestoreRequest::default()
            };
            let started = Instant::now();
            let outcome = podrestore_agent::restore::restore(request)?;
            let took = started.elapsed();
            check_landed(u32::try_from(outcome.pid)?, target)?;
            took
        }
        Restorer::Agent => {
            let template = args.agent_cmd.as_deref().unwrap_or_default();
            let mut spec = bundle.clone();
            spec.cgroups_path = cgroup.clone();
            let bundle_dir = spec.write(&dir.join(format!("bundle-{id}")))?;
            std::fs::create_dir_all(&work)?;
            let mut cmd = agent_restore_command(
                template,
                &Target {
                    images,
                    rootfs,
                    bundle: &bundle_dir,
                    work: &work,
                    sandbox: target,
                    cgroup: &cgroup,
                },
            );
            let started = Instant::now();
            let output = cmd.stdin(Stdio::null()).output()?;
            let took = started.elapsed();
            if !output.status.success() {
                bail!(
                    "agent restore failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let restored: Vec<u32> = target
                .members(SandboxNs::Pid)
                .into_iter()
                .filter(|pid| *pid != target.init_pid())
                .collect();
            match restored.first() {
                Some(pid) => check_landed(*pid, target)?,
                None => bail!("the agent's restore left nothing running in the target"),
            }
            took
        }
    };
    target.clear(Duration::from_secs(30))?;
    let _ = remove_cgroup(&cgroup);
    let _ = std::fs::remove_dir_all(&work);
    Ok(took)
}

/// The target's namespaces as the agent takes them: the sandbox's pid, network,
/// ipc and uts paths in runtime-config order, then a new mount namespace, as in
/// the bundle runc restores with.
fn agent_namespaces(target: &Sandbox) -> Result<Vec<Namespace>> {
    let mut namespaces = target
        .namespaces()
        .into_iter()
        .map(|(kind, path)| Namespace::from_oci(kind.oci_name(), path.to_str()))
        .collect::<Result<Vec<_>, _>>()?;
    namespaces.push(Namespace::from_oci("mount", None)?);
    Ok(namespaces)
}

/// A restore only counts if the process runs in the target's namespaces.
fn check_landed(pid: u32, target: &Sandbox) -> Result<()> {
    if !procfs::is_alive(pid) {
        bail!("restored process {pid} is not running");
    }
    for kind in SandboxNs::ALL {
        if !target.contains(pid, kind)? {
            bail!(
                "restored process {pid} is not in the target's {} namespace",
                kind.oci_name()
            );
        }
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "tiny" {
        return Ok(0);
    }
    let (number, shift) = match lower.strip_suffix(['g', 'm', 'k']) {
        Some(number) if lower.ends_with('g') => (number, 30),
        Some(number) if lower.ends_with('m') => (number, 20),
        Some(number) => (number, 10),
        None => (lower.as_str(), 0),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("size {text:?}: expected tiny or a number with K, M or G"))?;
    Ok(number << shift)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.metadata().ok())
                .filter(|meta| meta.is_file())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or_default()
}

fn first_line(cmd: &mut Command) -> Result<String> {
    let output = cmd.stdin(Stdio::null()).output()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

fn cell(samples: &[f64]) -> String {
    match median(samples) {
        None => "-".to_owned(),
        Some(median) => {
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(0.0, f64::max);
            format!("{median:.1} ms ({min:.0}-{max:.0})")
        }
    }
}

fn ratio(top: &[f64], bottom: &[f64]) -> String {
    match (median(top), median(bottom)) {
        (Some(top), Some(bottom)) if bottom > 0.0 => format!("{:.2}", top / bottom),
        _ => "-".to_owned(),
    }
}

fn print_table(results: &[SizeResult], runs: usize, versions: &str) {
    println!("restore time, median (min-max) of {runs} runs; {versions}");
    println!(
        "{:<8} {:>9} {:>9}  {:<22} {:<22} {:<22} {:>9} {:>10} {:>10}",
        "workload",
        "rss",
        "images",
        "runc restore",
        "criu restore",
        "agent",
        "runc/criu",
        "agent/criu",
        "agent/runc"
    );
    for result in results {
        println!(
            "{:<8} {:>5} MiB {:>5} MiB  {:<22} {:<22} {:<22} {:>9} {:>10} {:>10}",
            result.workload,
            result.rss_bytes >> 20,
            result.image_bytes >> 20,
            cell(&result.runc_ms),
            cell(&result.criu_ms),
            cell(&result.agent_ms),
            ratio(&result.runc_ms, &result.criu_ms),
            ratio(&result.agent_ms, &result.criu_ms),
            ratio(&result.agent_ms, &result.runc_ms),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("tiny").unwrap(), 0);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn median_and_ratio() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(ratio(&[2.0], &[1.0]), "2.00");
        assert_eq!(ratio(&[], &[1.0]), "-");
    }
}
