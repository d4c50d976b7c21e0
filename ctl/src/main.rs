//! `heraldctl`: drives a Herald cluster through its gRPC server API, and helps with the
//! local chores: a development token, an example config, checking a config file.
//!
//! # Layout
//! - `cli`: the commands and flags (clap).
//! - `api`: the calls of the server API, printed as tables or JSON.
//! - `node`: the nodes of the cluster, and one gateway at a time (`heraldctl node`).
//! - `local`: what needs no cluster (tokens, config).
//! - `output`: tables or JSON, and the gateways a command did not reach.
//! - `table`: plain aligned tables for a terminal.

mod api;
mod cli;
mod local;
mod node;
mod output;
mod table;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, NodeCommand};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Token(args) => local::token(&args),
        Command::Config(command) => local::config(command),
        Command::Info => node::run(&cli.connection, cli.json, NodeCommand::List).await,
        Command::Node(command) => node::run(&cli.connection, cli.json, command).await,
        command => api::run(&cli.connection, cli.json, command).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("heraldctl: {} ({:?})", status.message(), status.code()),
                None => eprintln!("heraldctl: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
