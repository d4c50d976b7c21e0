//! `herald`: runs a standalone broker, or a gateway or router of a cluster.

mod cli;
mod logging;
mod node;
mod router_http;
mod signal;

use clap::Parser;
use herald_core::config::Config;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // Validate the whole configuration before anything starts or binds.
    let config = Config::load(cli.config.as_deref(), cli.overrides())?;
    logging::init(&config.log);
    herald_core::metrics::install(cli.mode.name())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(node::run(cli.mode, config))
}
