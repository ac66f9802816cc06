//! Subcommands of `podrestore-agent`. Each lives in its own module with its own
//! clap `Args` and a `run` function; this module only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podrestore_agent::criu::options::CriuFlags;

mod checkpoint;
mod inspect;
mod plan;
mod restore;
mod restore_shim;
mod serve;

/// Restore CRIU checkpoints into pods, following runc's restore rules.
#[derive(Debug, Parser)]
#[command(name = "podrestore-agent", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CRIU restore request the agent would send, as JSON.
    Plan(plan::Args),
    /// Checkpoint a process tree into a checkpoint archive.
    Checkpoint(checkpoint::Args),
    /// Restore a checkpoint archive into existing namespaces.
    Restore(restore::Args),
    /// Print what a checkpoint archive holds.
    Inspect(inspect::Args),
    /// Run the agent's gRPC service for the operator.
    Serve(serve::Args),
    /// Restore inside a target container's PID namespace (started by `serve`).
    #[command(hide = true)]
    RestoreShim(restore_shim::Args),
}

/// runc's switches for what CRIU may dump and restore, the same on `plan`,
/// `checkpoint` and `restore` (runc's flag names).
#[derive(Debug, clap::Args)]
struct Switches {
    /// Established TCP connections are dumped and restored.
    #[arg(long)]
    tcp_established: bool,
    /// External unix sockets are allowed.
    #[arg(long)]
    ext_unix_sk: bool,
    /// The tree was started from a shell (has a controlling terminal).
    #[arg(long)]
    shell_job: bool,
    /// File locks are dumped and restored.
    #[arg(long)]
    file_locks: bool,
}

impl Switches {
    /// CRIU's flags for these switches, the others off.
    fn flags(&self) -> CriuFlags {
        CriuFlags {
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            shell_job: self.shell_job,
            file_locks: self.file_locks,
            ..CriuFlags::default()
        }
    }
}

/// Runs the chosen subcommand and maps its outcome to the process exit status:
/// errors go to stderr as one line each and exit with status 1.
pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        Command::Plan(a) => plan::run(a),
        Command::Checkpoint(a) => checkpoint::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Serve(a) => serve::run(a),
        Command::RestoreShim(a) => restore_shim::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
