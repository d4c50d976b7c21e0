//! What `heraldctl` does without a cluster: development tokens and config files.

use anyhow::{Context, bail};
use herald_core::config::Config;
use herald_core::time::unix_micros;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::cli::{ConfigCommand, TokenArgs};

/// The example config, with every option and its default.
const EXAMPLE: &str = include_str!("../../herald.example.toml");

/// Prints an HS256 connection token for `args.user`.
pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = match (&args.secret, &args.config) {
        (Some(secret), _) => secret.clone(),
        (None, Some(file)) => Config::load(Some(file), json!({}))?.auth.hmac_secret,
        (None, None) => bail!("give --secret, or --config with auth.hmac_secret"),
    };
    if secret.is_empty() {
        bail!("the HS256 secret is empty");
    }
    let now = unix_micros() / 1_000_000;
    let mut claims = json!({ "sub": args.user, "exp": now + args.ttl.as_secs() });
    if let Some(info) = &args.info {
        let info: Value = serde_json::from_str(info).context("--info is not JSON")?;
        claims["info"] = info;
    }
    if !args.grants.is_empty() {
        claims["channels"] = json!(args.grants);
    }
    let key = EncodingKey::from_secret(secret.as_bytes());
    println!("{}", encode(&Header::default(), &claims, &key)?);
    Ok(())
}

pub fn config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Example => print!("{EXAMPLE}"),
        ConfigCommand::Check { file } => {
            Config::load(Some(&file), json!({}))?;
            println!("{}: ok", file.display());
        }
    }
    Ok(())
}
