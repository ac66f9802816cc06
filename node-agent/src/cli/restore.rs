//! `podrestore-agent restore`.

/// Arguments of `podrestore-agent restore`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `podrestore-agent restore`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("restore is not built yet")
}
