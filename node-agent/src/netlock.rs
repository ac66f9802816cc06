//! CRIU's network lock: what it leaves in a network namespace, and removing it.
//!
//! While CRIU dumps or restores a tree whose network namespace it treats as
//! external (a pod's, `extRootNetNS`), it locks that namespace so no packet
//! reaches or leaves the tree's sockets while they are half saved or half
//! restored:
//! - iptables (CRIU's default): a `CRIU` chain in the filter table of `ip` and
//!   `ip6`, jumped to first from INPUT and OUTPUT, accepting only packets with
//!   CRIU's mark 0xC114 and dropping everything else;
//! - nftables: a table `inet CRIU-<id>` with input and output chains of policy
//!   drop.
//!
//! A dump that ends the tree leaves the lock in place: CRIU expects the restore
//! into the same namespace to lift it (measured with CRIU 4.2.1). In a pod that
//! namespace lives on with the pod's other containers, whose traffic is then
//! dropped. A failed restore can leave the same lock behind (criu#2828).
//! [`remove_lock`] removes exactly what CRIU adds: the jumps to `CRIU`, the
//! `CRIU` chain, and tables named `CRIU` or `CRIU-*`; nothing else of the
//! namespace's firewall is touched.
//!
//! The tools run in the namespace through `setns` in the child between fork and
//! exec ([`crate::sys::process::spawn_in_namespace`]), so nothing depends on
//! `nsenter` and the agent's own threads never change namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys::process::spawn_in_namespace;

/// The name of CRIU's iptables chain and the prefix of its nftables tables.
pub const CRIU_CHAIN: &str = "CRIU";

/// The programs used to read and change a namespace's firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `iptables` (the legacy or nf_tables flavour, whichever CRIU uses).
    pub iptables: PathBuf,
    /// `ip6tables`.
    pub ip6tables: PathBuf,
    /// `nft`.
    pub nft: PathBuf,
}

impl Default for Tools {
    /// The tools by name, looked up on PATH as CRIU looks them up.
    fn default() -> Self {
        Self {
            iptables: "iptables".into(),
            ip6tables: "ip6tables".into(),
            nft: "nft".into(),
        }
    }
}

/// Errors of reading or removing a lock.
#[derive(Debug, thiserror::Error)]
pub enum NetLockError {
    /// The network namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source}", path = .path.display())]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A tool could not be started in the namespace.
    #[error("cannot run {command} in {netns}: {source}", netns = .netns.display())]
    Spawn {
        /// The command line.
        command: String,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A tool ran and failed.
    #[error("{command} in {netns} failed ({status}): {stderr}", netns = .netns.display())]
    Failed {
        /// The command line.
        command: String,
        /// The namespace.
        netns: PathBuf,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// Several steps failed; every step was attempted.
    #[error("{}", join(.0))]
    Many(Vec<NetLockError>),
}

fn join(errors: &[NetLockError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The network lock the agent asks CRIU for when the caller leaves the choice
/// to it: none (`skip`, CRIU >= 3.19) unless established TCP connections are
/// dumped or restored, otherwise CRIU's default (`None`).
///
/// Why the lock can go without them: it exists so that packets do not change
/// the state of half-saved or half-restored TCP connections. Without
/// `tcp_established` CRIU refuses to dump a tree holding any ("Connected TCP
/// socket") and an image holds none to restore; listening sockets keep what
/// arrives in their queues, and the tree is frozen meanwhile anyway. What the
/// lock would still do in a pod is drop the traffic of the pod's other
/// containers for as long as CRIU works, and cost the time of adding and
/// removing the rules on every call.
pub fn automatic(
    criu_version: u32,
    tcp_established: bool,
) -> Option<crate::criu::options::NetworkLock> {
    use crate::criu::version::NETWORK_LOCK_SKIP;
    (!tcp_established && criu_version >= NETWORK_LOCK_SKIP)
        .then_some(crate::criu::options::NetworkLock::Skip)
}

/// The iptables commands (arguments after the tool name) that remove CRIU's
/// lock from the filter table listed by `iptables -t filter -S`: first every
/// rule of another chain that jumps to `CRIU` (deleted by its exact
/// specification), then the chain's rules and the chain itself.
pub fn iptables_removals(listing: &str) -> Vec<Vec<String>> {
    let mut removals = Vec::new();
    let mut has_chain = false;
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["-N", chain] if *chain == CRIU_CHAIN => has_chain = true,
            ["-A", chain, rule @ ..]
                if *chain != CRIU_CHAIN && rule.windows(2).any(|w| w == ["-j", CRIU_CHAIN]) =>
            {
                let mut args = vec!["-t".to_owned(), "filter".to_owned(), "-D".to_owned()];
                args.push((*chain).to_owned());
                args.extend(rule.iter().map(|w| (*w).to_owned()));
                removals.push(args);
            }
            _ => {}
        }
    }
    if has_chain {
        for op in ["-F", "-X"] {
            removals.push(vec![
                "-t".to_owned(),
                "filter".to_owned(),
                op.to_owned(),
                CRIU_CHAIN.to_owned(),
            ]);
        }
    }
    removals
}

/// The nft commands that delete CRIU's tables, from `nft list tables` output
/// (`table inet CRIU-6fe82406-...`).
pub fn nft_removals(listing: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["table", family, name] if is_criu_table(name) => Some(vec![
                    "delete".to_owned(),
                    "table".to_owned(),
                    family.to_owned(),
                    name.to_owned(),
                ]),
                _ => None,
            },
        )
        .collect()
}

fn is_criu_table(name: &str) -> bool {
    name == CRIU_CHAIN
        || name
            .strip_prefix(CRIU_CHAIN)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// One tool run in a namespace.
struct InNetns<'a> {
    netns_path: &'a Path,
    netns: File,
}

impl InNetns<'_> {
    /// Runs `tool args` in the namespace. `Ok(None)` when the tool is not
    /// installed: whatever it manages cannot have been created through it.
    fn run(&self, tool: &Path, args: &[String]) -> Result<Option<String>, NetLockError> {
        let mut command = Command::new(tool);
        command
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = describe(tool, args);
        let child = match spawn_in_namespace(command, self.netns.as_fd(), libc::CLONE_NEWNET) {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(tool = %tool.display(), "not installed; skipped");
                return Ok(None);
            }
            Err(source) => {
                return Err(NetLockError::Spawn {
                    command: line,
                    netns: self.netns_path.to_owned(),
                    source,
                });
            }
        };
        let output = child
            .wait_with_output()
            .map_err(|source| NetLockError::Spawn {
                command: line.clone(),
                netns: self.netns_path.to_owned(),
                source,
            })?;
        if !output.status.success() {
            return Err(NetLockError::Failed {
                command: line,
                netns: self.netns_path.to_owned(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    }
}

fn describe(tool: &Path, args: &[String]) -> String {
    std::iter::once(tool.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn open_netns(netns: &Path) -> Result<InNetns<'_>, NetLockError> {
    let file = File::open(netns).map_err(|source| NetLockError::Open {
        path: netns.to_owned(),
        source,
    })?;
    Ok(InNetns {
        netns_path: netns,
        netns: file,
    })
}

/// The parts of CRIU's lock present in the network namespace at `netns`, one
/// line per rule, chain or table (`iptables: -A INPUT -j CRIU`, `nft: table
/// inet CRIU-...`). Empty when the namespace is not locked.
pub fn list_lock(netns: &Path, tools: &Tools) -> Result<Vec<String>, NetLockError> {
    let ns = open_netns(netns)?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let list = ["-w", "-t", "filter", "-S"].map(str::to_owned);
    for tool in [&tools.iptables, &tools.ip6tables] {
        match ns.run(tool, &list) {
            Ok(Some(out)) => found.extend(
                out.lines()
                    .filter(|l| l.split_whitespace().any(|w| w == CRIU_CHAIN))
                    .map(|l| format!("{}: {}", tool.display(), l.trim())),
            ),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    match ns.run(&tools.nft, &["list".to_owned(), "tables".to_owned()]) {
        Ok(Some(out)) => found.extend(
            out.lines()
                .filter(|l| !nft_removals(l).is_empty())
                .map(|l| format!("{}: {}", tools.nft.display(), l.trim())),
        ),
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    finish(found, errors)
}

/// Removes CRIU's lock (see the module documentation) from the network
/// namespace at `netns` and returns the commands it ran; empty when there was
/// nothing to remove. Every step is attempted; all failures come back together.
pub fn remove_lock(netns: &Path, tools: &Tools) -> Result<Vec<String>, NetLockError> {
    let ns = open_netns(netns)?;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    let list = ["-w", "-t", "filter", "-S"].map(str::to_owned);
    for tool in [&tools.iptables, &tools.ip6tables] {
        let listing = match ns.run(tool, &list) {
            Ok(Some(out)) => out,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for args in iptables_removals(&listing) {
            let mut args_w = vec!["-w".to_owned()];
            args_w.extend(args);
            match ns.run(tool, &args_w) {
                Ok(_) => done.push(describe(tool, &args_w)),
                Err(e) => errors.push(e),
            }
        }
    }
    match ns.run(&tools.nft, &["list".to_owned(), "tables".to_owned()]) {
        Ok(Some(listing)) => {
            for args in nft_removals(&listing) {
                match ns.run(&tools.nft, &args) {
                    Ok(_) => done.push(describe(&tools.nft, &args)),
                    Err(e) => errors.push(e),
                }
            }
        }
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    if !done.is_empty() {
        tracing::info!(netns = %netns.display(), removed = ?done, "removed CRIU's network lock");
    }
    finish(done, errors)
}

fn finish(done: Vec<String>, mut errors: Vec<NetLockError>) -> Result<Vec<String>, NetLockError> {
    match errors.len() {
        0 => Ok(done),
        1 => Err(errors.remove(0)),
        _ => Err(NetLockError::Many(errors)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `iptables -S` after a CRIU 4.2.1 dump that ended the tree (measured).
    const LOCKED: &str = "-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N CRIU
-A INPUT -j CRIU
-A OUTPUT -j CRIU
-A CRIU -m mark --mark 0xc114 -j ACCEPT
-A CRIU -j DROP
";

    #[test]
    fn iptables_lock_is_removed_jumps_first() {
        let got: Vec<String> = iptables_removals(LOCKED)
            .into_iter()
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(
            got,
            [
                "-t filter -D INPUT -j CRIU",
                "-t filter -D OUTPUT -j CRIU",
                "-t filter -F CRIU",
                "-t filter -X CRIU",
            ]
        );
    }

    #[test]
    fn other_rules_are_left_alone() {
        let listing = "-P INPUT ACCEPT
-N KUBE-FIREWALL
-N CRIUX
-A INPUT -j KUBE-FIREWALL
-A INPUT -s 10.0.0.0/8 -j ACCEPT
-A OUTPUT -j CRIUX
-A KUBE-FIREWALL -m comment --comment \"drop CRIU\" -j DROP
";
        assert!(iptables_removals(listing).is_empty());
        assert!(iptables_removals("").is_empty());
    }

    #[test]
    fn a_chain_without_jumps_is_still_removed() {
        let got = iptables_removals("-N CRIU\n-A CRIU -j DROP\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].join(" "), "-t filter -X CRIU");
    }

    #[test]
    fn nft_tables_of_criu_only() {
        let listing = "table ip filter
table ip6 filter
table inet CRIU-6fe82406-122b-4294-a0
table inet CRIU
table inet CRIUS
table ip nat
";
        let got: Vec<String> = nft_removals(listing)
            .into_iter()
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(
            got,
            [
                "delete table inet CRIU-6fe82406-122b-4294-a0",
                "delete table inet CRIU"
            ]
        );
    }

    #[test]
    fn lock_skipped_only_without_established_connections() {
        use crate::criu::options::NetworkLock;
        assert_eq!(automatic(40201, false), Some(NetworkLock::Skip));
        assert_eq!(automatic(40201, true), None);
        // `skip` arrived in CRIU 3.19.
        assert_eq!(automatic(31800, false), None);
        assert_eq!(automatic(31900, false), Some(NetworkLock::Skip));
    }

    #[test]
    fn missing_namespace_file_is_an_open_error() {
        let err = remove_lock(Path::new("/nonexistent/netns"), &Tools::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open network namespace /nonexistent/netns: "),
            "{err}"
        );
    }
}
