//! `podrestore-agent inspect`.

/// Arguments of `podrestore-agent inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `podrestore-agent inspect`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("inspect is not built yet")
}
