//! `podrestore-agent serve`.

/// Arguments of `podrestore-agent serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `podrestore-agent serve`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("serve is not built yet")
}
