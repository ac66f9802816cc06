//! What a scenario sees of the node from the host: processes by PID, files'
//! digests and the firewall of a network namespace. The nodes of the local
//! cluster share the host's PID namespace, so a host PID names the same
//! process everywhere.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// The start time of a running host PID (field 22 of its stat), to tell it
/// from a later process with the same PID; `None` when it is gone or a zombie.
pub fn start_ticks(pid: i64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19).map(|s| (*s).to_owned())
}

/// A host PID of a process in container `id` (`containerd://<id>` or the bare
/// ID): one whose cgroup lines all end with the ID.
pub fn container_pid(id: &str) -> Result<i64> {
    let id = crate::pods::bare_container_id(id);
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if !cgroup.is_empty() && cgroup.lines().all(|l| l.ends_with(id)) {
            return Ok(pid);
        }
    }
    bail!("no process of container {id} runs")
}

/// The SHA-256 of a file, as `sha256sum` prints it.
pub fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("run sha256sum")?;
    if !out.status.success() {
        bail!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .context("no digest from sha256sum")
}

/// What a restore must leave as it found it in the firewall of the network
/// namespace `netns`: the rules `iptables-save` and `ip6tables-save` print,
/// their chains whose policy is not ACCEPT, and each line of
/// `nft list ruleset` that drops or names CRIU; a line each, prefixed with the
/// tool. Empty built-in chains, which the nf_tables flavour of iptables
/// creates when a rule is first added to them, do not count.
pub fn firewall(netns: &Path) -> Result<Vec<String>> {
    let mut kept = Vec::new();
    for command in [
        &["iptables-save"][..],
        &["ip6tables-save"],
        &["nft", "list", "ruleset"],
    ] {
        let out = run_in_netns(netns, command)?;
        for line in out.lines().map(str::trim) {
            let rule = line.starts_with("-A ");
            let closed = line.starts_with(':') && !line.contains(" ACCEPT");
            let drops = command[0] == "nft" && line.contains("drop");
            if rule || closed || drops || line.contains("CRIU") {
                kept.push(format!("{}: {}", command[0], without_counters(line)));
            }
        }
    }
    Ok(kept)
}

/// An nft rule without its packet and byte counts, which change with
/// traffic.
fn without_counters(line: &str) -> String {
    let mut words = Vec::new();
    let mut skip = false;
    for word in line.split_whitespace() {
        if skip {
            skip = false;
        } else if word == "packets" || word == "bytes" {
            skip = true;
        } else {
            words.push(word);
        }
    }
    words.join(" ")
}

/// Runs `command` in the network namespace `netns` and returns its output.
pub fn run_in_netns(netns: &Path, command: &[&str]) -> Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .args(command)
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} in {}: {}",
            netns.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
