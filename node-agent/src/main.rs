//! `podrestore-agent`: the node agent's command line.
//!
//! `serve` runs the gRPC service the operator talks to; the other subcommands are
//! for node operators working on one machine by hand.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    cli::run(args)
}
