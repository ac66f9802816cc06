//! `podrestore-agent plan`.

/// Arguments of `podrestore-agent plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `podrestore-agent plan`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("plan is not built yet")
}
