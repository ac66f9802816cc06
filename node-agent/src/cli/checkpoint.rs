//! `podrestore-agent checkpoint`.

/// Arguments of `podrestore-agent checkpoint`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `podrestore-agent checkpoint`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("checkpoint is not built yet")
}
