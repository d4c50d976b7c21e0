//! `herald`: runs a standalone broker, or a gateway or router of a cluster.

mod cli;
mod logging;
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
        .block_on(serve(cli.mode, config))
}

/// Binds the node's listeners, says where they are, and runs it until a signal.
async fn serve(mode: herald::Mode, mut config: Config) -> anyhow::Result<()> {
    config.node.id = herald::node_id(mode, &config);
    let listeners = herald::Listeners::bind(mode, &config).await?;
    herald::announce(mode, &config.node.id, &listeners)?;
    herald::run(mode, config, listeners, signal::shutdown_token()).await
}
