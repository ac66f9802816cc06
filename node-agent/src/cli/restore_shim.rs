//! `podrestore-agent restore-shim`: the process `serve` starts inside a target
//! container's PID namespace for one restore (see the engine's `shim` module).
//! It reads its request from a file, answers on stdout, and then lives as the
//! restored tree's parent, exiting with the tree's status. Not for people.

use podrestore_agent::engine::shim;

/// Arguments of `podrestore-agent restore-shim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// UID of the PodRestore; lets the agent find this shim again.
    #[arg(long)]
    uid: String,
    /// The request file the agent wrote.
    #[arg(long)]
    request: std::path::PathBuf,
}

/// Runs the shim and exits with the restored tree's status.
pub fn run(args: Args) -> anyhow::Result<()> {
    // The log goes to stderr, which the agent points at the restore's work
    // directory.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    tracing::info!(uid = %args.uid, "restore shim started");
    let code = shim::run(&args.request, std::io::stdout());
    if code == 0 {
        Ok(())
    } else {
        std::process::exit(code)
    }
}
