//! `chatvault sync ...`: connect an encrypted vault to a chatvault server
//! and sync it. The server URL and account name are kept in the vault
//! (`sync.remote`, `sync.user`); the passphrase that unlocks the vault also
//! signs in (a separate key is derived for the server, which never sees the
//! passphrase or the data key).

use super::{vault_options, Access, Context};
use crate::cli::{JsonFlag, SyncCommand, SyncServerArgs};
use crate::output;
use crate::passphrase;
use anyhow::{bail, Context as _, Result};
use chatvault::Vault;
use chatvault_sync::{SyncClient, SyncOptions, SyncReport};
use serde_json::json;
use std::sync::Arc;

/// Metadata key of the account name (`sync.remote` holds the server URL).
const USER_KEY: &str = chatvault::meta_keys::SYNC_USER;

pub async fn run(ctx: &Context, cmd: SyncCommand) -> Result<()> {
    match cmd {
        SyncCommand::Register(args) => connect(ctx, args, Connect::Register).await,
        SyncCommand::Login(args) => connect(ctx, args, Connect::Login).await,
        SyncCommand::Join(args) => join(ctx, args).await,
        SyncCommand::Now(json) => now(ctx, json).await,
        SyncCommand::Status(json) => status(ctx, json).await,
    }
}

#[derive(Clone, Copy)]
enum Connect {
    Register,
    Login,
}

/// One-shot commands need no WebSocket.
fn options() -> SyncOptions {
    SyncOptions {
        realtime: false,
        ..SyncOptions::default()
    }
}

/// The vault and its passphrase; sync needs an encrypted vault.
async fn open_encrypted(ctx: &Context) -> Result<(Arc<Vault>, passphrase::Passphrase)> {
    let (vault, passphrase) = ctx.open_keeping_passphrase(Access::Existing).await?;
    let Some(passphrase) = passphrase else {
        bail!(
            "sync needs an encrypted vault (the server must only ever hold ciphertext): \
             export this one, create one with `chatvault init --encrypt` and import the export"
        );
    };
    Ok((Arc::new(vault), passphrase))
}

async fn remember(vault: &Vault, args: &SyncServerArgs) -> Result<()> {
    vault.replica().set_sync_remote(Some(&args.server)).await?;
    vault
        .replica()
        .set_sync_meta(USER_KEY, Some(args.user.as_bytes().to_vec()))
        .await?;
    Ok(())
}

async fn connect(ctx: &Context, args: SyncServerArgs, how: Connect) -> Result<()> {
    let (vault, passphrase) = open_encrypted(ctx).await?;
    let (server, user, secret) = (&args.server, &args.user, passphrase.expose());
    let client = match how {
        Connect::Register => SyncClient::register(vault.clone(), server, user, secret, options())
            .await
            .with_context(|| format!("cannot register {user} on {server}"))?,
        Connect::Login => SyncClient::login(vault.clone(), server, user, secret, options())
            .await
            .with_context(|| format!("cannot sign in as {user} on {server}"))?,
    };
    remember(&vault, &args).await?;
    sync_and_report(&client, args.json).await
}

async fn join(ctx: &Context, args: SyncServerArgs) -> Result<()> {
    let store = ctx.open_store(Access::CreateIfMissing).await?;
    let passphrase = passphrase::read(&ctx.unlock_source())?;
    let client = SyncClient::join(
        store,
        vault_options(),
        &args.server,
        &args.user,
        passphrase.expose(),
        options(),
    )
    .await
    .with_context(|| format!("cannot join {} on {}", args.user, args.server))?;
    remember(client.vault(), &args).await?;
    sync_and_report(&client, args.json).await
}

async fn now(ctx: &Context, json: JsonFlag) -> Result<()> {
    let (vault, passphrase) = open_encrypted(ctx).await?;
    let (server, user) = connection(&vault).await?;
    let client = SyncClient::login(vault, &server, &user, passphrase.expose(), options())
        .await
        .with_context(|| format!("cannot sign in as {user} on {server}"))?;
    sync_and_report(&client, json).await
}

/// The stored server and account, or how to set them.
async fn connection(vault: &Vault) -> Result<(String, String)> {
    let server = vault.replica().sync_remote().await?;
    let user = vault
        .replica()
        .sync_meta(USER_KEY)
        .await?
        .and_then(|b| String::from_utf8(b).ok());
    match (server, user) {
        (Some(server), Some(user)) => Ok((server, user)),
        _ => bail!(
            "this vault is not connected to a server: run `chatvault sync register` (new \
             account), `login` (existing account) or `join` (new device) with --server and --user"
        ),
    }
}

async fn sync_and_report(client: &SyncClient, json: JsonFlag) -> Result<()> {
    let report = client.sync_once().await.context("sync failed")?;
    let dead = client.dead_letters().await?;
    if json.json {
        return output::json(&report_json(&report, dead.len()));
    }
    let SyncReport { push, pull, .. } = &report;
    println!(
        "pushed {} change(s) ({} already newer on the server), pulled {} ({} older than local)",
        push.applied, push.superseded, pull.applied, pull.superseded
    );
    if pull.resynced {
        println!("rebuilt from the server's snapshot (this device was behind its history)");
    }
    if !dead.is_empty() {
        println!(
            "{} change(s) refused by the server and parked (see `chatvault sync status`)",
            dead.len()
        );
    }
    Ok(())
}

fn report_json(report: &SyncReport, dead_letters: usize) -> serde_json::Value {
    json!({
        "pushed": report.push.applied,
        "pushSuperseded": report.push.superseded,
        "deadLettered": report.push.dead_lettered,
        "pulled": report.pull.applied,
        "pullSuperseded": report.pull.superseded,
        "resynced": report.pull.resynced,
        "deadLetters": dead_letters,
    })
}

async fn status(ctx: &Context, json: JsonFlag) -> Result<()> {
    let (vault, _) = open_encrypted(ctx).await?;
    let server = vault.replica().sync_remote().await?;
    let user = vault
        .replica()
        .sync_meta(USER_KEY)
        .await?
        .and_then(|b| String::from_utf8(b).ok());
    let pending = vault.stats().await?.pending_changes;
    if json.json {
        return output::json(&json!({ "server": server, "user": user, "pending": pending }));
    }
    match (server, user) {
        (Some(server), Some(user)) => println!("server   {server}\naccount  {user}"),
        _ => println!("not connected to a server"),
    }
    println!("pending  {pending} change(s)");
    Ok(())
}
