//! `chatvault sync ...`: connect an encrypted vault to a chatvault server
//! and sync it. The server URL and account name are kept in the vault
//! (`sync.remote`, `sync.user`); the passphrase that unlocks the vault also
//! signs in (a separate key is derived for the server, which never sees the
//! passphrase or the data key). The device's session is kept in the vault,
//! sealed, so every command reuses one session instead of opening another.

use super::{vault_options, Access, Context};
use crate::cli::{DeadLetterArgs, JsonFlag, SessionsArgs, SyncCommand, SyncServerArgs};
use crate::output;
use crate::passphrase;
use crate::progress;
use anyhow::{bail, Context as _, Result};
use chatvault::Vault;
use chatvault_core::EntityKind;
use chatvault_sync::{DeadLetter, SyncClient, SyncError, SyncOptions, SyncReport};
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
        SyncCommand::DeadLetters(args) => dead_letters(ctx, args).await,
        SyncCommand::Unlink => unlink(ctx).await,
        SyncCommand::Logout => logout(ctx).await,
        SyncCommand::Sessions(args) => sessions(ctx, args).await,
        SyncCommand::Watch(args) => super::watch::run(ctx, args).await,
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
pub(super) async fn open_encrypted(ctx: &Context) -> Result<(Arc<Vault>, passphrase::Passphrase)> {
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

/// Refuses to move a vault linked to one account to another: its records
/// would silently go to a new, empty account (and the old one stop
/// receiving them).
async fn check_not_linked_elsewhere(vault: &Vault, args: &SyncServerArgs) -> Result<()> {
    if let Some((server, user)) = linked_account(vault).await? {
        let same_server = server.trim_end_matches('/') == args.server.trim_end_matches('/');
        if !(same_server && user.eq_ignore_ascii_case(&args.user)) {
            bail!(
                "this vault is linked to account {user} on {server}; run `chatvault sync unlink` \
                 first to link it to {} on {}",
                args.user,
                args.server
            );
        }
    }
    Ok(())
}

async fn connect(ctx: &Context, args: SyncServerArgs, how: Connect) -> Result<()> {
    let (vault, passphrase) = open_encrypted(ctx).await?;
    if matches!(how, Connect::Register) {
        check_not_linked_elsewhere(&vault, &args).await?;
    }
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
    let passphrase = passphrase::read(&ctx.unlock_source())?;
    let fresh = !ctx.store_path().exists();
    let store = ctx.open_store(Access::Create).await?;
    let joined = SyncClient::join(
        store,
        vault_options(),
        &args.server,
        &args.user,
        passphrase.expose(),
        options(),
    )
    .await;
    let client = match joined {
        Ok(client) => client,
        Err(e) => {
            // Only a successful join makes a vault: a half-made one would
            // be an unencrypted vault that blocks the retry.
            if fresh {
                ctx.remove_new_vault();
            }
            return Err(e).with_context(|| format!("cannot join {} on {}", args.user, args.server));
        }
    };
    remember(client.vault(), &args).await?;
    sync_and_report(&client, args.json).await
}

async fn now(ctx: &Context, json: JsonFlag) -> Result<()> {
    let (vault, passphrase) = open_encrypted(ctx).await?;
    let client = resumed(vault, &passphrase, options()).await?;
    match sync_and_report(&client, json).await {
        Err(e) if session_refused(&e) => {
            sign_in_again(&client, &passphrase).await?;
            sync_and_report(&client, json).await
        }
        done => done,
    }
}

/// The vault's account, from the session saved in the vault (no round
/// trip) or, without one, signed in with the passphrase. The server may
/// still refuse the saved session: commands run once more after
/// [`sign_in_again`] when they fail with [`session_refused`].
async fn resumed(
    vault: Arc<Vault>,
    passphrase: &passphrase::Passphrase,
    options: SyncOptions,
) -> Result<SyncClient> {
    let (server, user) = connection(&vault).await?;
    SyncClient::resume_or_login(vault, &server, &user, passphrase.expose(), options)
        .await
        .with_context(|| format!("cannot sign in as {user} on {server}"))
}

/// Whether `error` is the server refusing the session (or the key it was
/// renewed with): the passphrase changed on another device, or the
/// session was revoked.
fn session_refused(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(SyncError::Unauthorized(_))))
}

/// Signs in with the passphrase given here, adopting the account's
/// current keys when they changed on another device.
async fn sign_in_again(client: &SyncClient, passphrase: &passphrase::Passphrase) -> Result<()> {
    client
        .sign_in(passphrase.expose())
        .await
        .context("the saved session was refused, and signing in with the passphrase failed")
}

/// [`resumed`], checked with the server before it is used, for the
/// long-running `sync watch`: a refused session is renewed with the
/// passphrase here, before the passphrase is dropped.
pub(super) async fn signed_in_with(
    vault: Arc<Vault>,
    passphrase: &passphrase::Passphrase,
    options: SyncOptions,
) -> Result<SyncClient> {
    let client = resumed(vault, passphrase, options).await?;
    // Offline and other failures surface in the sync loop itself.
    if let Err(SyncError::Unauthorized(_)) = client.sessions().await {
        sign_in_again(&client, passphrase).await?;
    }
    Ok(client)
}

/// The server URL and account name the vault is linked to, if both are
/// stored.
async fn linked_account(vault: &Vault) -> Result<Option<(String, String)>> {
    let server = vault.replica().sync_remote().await?;
    let user = vault
        .replica()
        .sync_meta(USER_KEY)
        .await?
        .and_then(|b| String::from_utf8(b).ok());
    Ok(server.zip(user))
}

/// The stored server and account, or how to set them.
async fn connection(vault: &Vault) -> Result<(String, String)> {
    match linked_account(vault).await? {
        Some(linked) => Ok(linked),
        None => bail!(
            "this vault is not connected to a server: run `chatvault sync register` (new \
             account), `login` (existing account) or `join` (new device) with --server and --user"
        ),
    }
}

/// For the commands that change a vault's keys: a client signed in to the
/// account the vault is linked to, or `None` for a vault that does not
/// sync. A linked vault whose server cannot be reached (or refuses the
/// passphrase) is an error that names the account: its keys must change
/// there first, so nothing is changed anywhere.
pub(super) async fn linked_client(
    vault: &Arc<Vault>,
    passphrase: &passphrase::Passphrase,
) -> Result<Option<SyncClient>> {
    let Some((server, user)) = linked_account(vault).await? else {
        return Ok(None);
    };
    let client = SyncClient::login(
        vault.clone(),
        &server,
        &user,
        passphrase.expose(),
        options(),
    )
    .await
    .with_context(|| {
        format!(
            "this vault syncs with account {user} on {server}, whose keys must change first, \
                 and signing in there failed; nothing was changed (retry when the server can be \
                 reached)"
        )
    })?;
    Ok(Some(client))
}

/// Syncs once (a push drains the outbox), with a progress bar on a
/// terminal; fails, naming how many changes are left, if anything pending
/// was not sent.
async fn sync_and_report(client: &SyncClient, json: JsonFlag) -> Result<()> {
    let (pending, _) = client.vault().replica().outbox_counts().await?;
    let bar = (pending > 0).then(|| progress::bar(Some(pending), "pushing"));
    let mut status = client.status();
    let watcher = bar.clone().map(|bar| {
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let left = status.borrow().pending;
                bar.set_position(bar.length().unwrap_or(0).saturating_sub(left));
            }
        })
    });
    let result = client.sync_once().await;
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (left, _) = client.vault().replica().outbox_counts().await?;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("sync failed; {left} change(s) not yet sent")))
        }
    };
    if left > 0 {
        bail!("{left} change(s) were written during the sync and are not sent yet; run `chatvault sync now` again");
    }
    let dead = client.dead_letters().await?;
    if json.json {
        return output::json(&report_json(&report, dead.len()));
    }
    let SyncReport { push, pull, .. } = &report;
    println!(
        "pushed {} change(s) ({} already newer on the server), pulled {} ({} older than local)",
        push.applied, push.superseded, pull.applied, pull.superseded
    );
    if pull.requeued > 0 {
        println!(
            "the server's database was restored from an older backup: sent back {} record(s) it had lost",
            pull.requeued
        );
    } else if pull.resynced {
        println!("rebuilt from the server's snapshot (this device was behind its history)");
    }
    if !dead.is_empty() {
        println!(
            "{} change(s) refused by the server and parked (see `chatvault sync dead-letters`)",
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
        "sentBack": report.pull.requeued,
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
    let (pending, parked) = vault.replica().outbox_counts().await?;
    let last_error = vault
        .replica()
        .sync_meta(chatvault::meta_keys::SYNC_LAST_ERROR)
        .await?
        .and_then(|b| String::from_utf8(b).ok());
    if json.json {
        return output::json(&json!({
            "server": server,
            "user": user,
            "pending": pending,
            "parked": parked,
            "lastError": last_error,
        }));
    }
    match (server, user) {
        (Some(server), Some(user)) => println!("server   {server}\naccount  {user}"),
        _ => println!("not connected to a server"),
    }
    println!("pending  {pending} change(s)");
    println!("parked   {parked} change(s) refused by the server (`chatvault sync dead-letters`)");
    if let Some(e) = last_error {
        println!("error    {e}");
    }
    Ok(())
}

fn letter_json(d: &DeadLetter) -> serde_json::Value {
    json!({
        "opId": d.op_id.to_string(),
        "kind": d.kind.as_str(),
        "id": d.entity_id.to_string(),
        "conversationId": d.conversation_id.map(|c| c.to_string()),
        "version": d.version.to_string(),
        "delete": d.delete,
        "reason": d.reason.as_code(),
        "message": d.message,
        "at": output::time(d.at),
        "attempts": d.attempts,
    })
}

/// `sync dead-letters`: lists parked changes, or retries or discards them.
/// Works offline: parking lives in the vault's outbox.
async fn dead_letters(ctx: &Context, args: DeadLetterArgs) -> Result<()> {
    let (vault, _) = open_encrypted(ctx).await?;
    let replica = vault.replica();
    let letters: Vec<DeadLetter> = replica
        .all_parked_changes()
        .await?
        .into_iter()
        .map(DeadLetter::from_parked)
        .collect();
    let find = |id: &str| -> Result<DeadLetter> {
        letters
            .iter()
            .find(|d| d.is_named_by(id))
            .cloned()
            .with_context(|| {
                format!("no parked change with id {id} (see `chatvault sync dead-letters`)")
            })
    };
    if args.all {
        for d in &letters {
            replica.unpark(d.entity_id, vec![]).await?;
        }
        println!(
            "{} change(s) will be sent by the next `chatvault sync now`",
            letters.len()
        );
        return Ok(());
    }
    if let Some(id) = args.retry {
        let d = find(&id)?;
        replica.unpark(d.entity_id, vec![]).await?;
        println!(
            "{} {} will be sent by the next `chatvault sync now`",
            d.kind.as_str(),
            d.entity_id
        );
        return Ok(());
    }
    if let Some(id) = args.discard {
        let d = find(&id)?;
        print_record(&vault, &d).await;
        if !super::confirm(
            "discard this change for good? it stays on this device but never syncs",
            args.yes,
            "refusing to discard",
        )? {
            println!("kept");
            return Ok(());
        }
        replica.discard_parked(d.seq).await?;
        println!(
            "discarded the change of {} {}",
            d.kind.as_str(),
            d.entity_id
        );
        return Ok(());
    }
    if args.json.json {
        return output::json(&letters.iter().map(letter_json).collect::<Vec<_>>());
    }
    if letters.is_empty() {
        println!("no parked changes");
    }
    for d in &letters {
        println!(
            "{}  {} {}  {} (x{}, {}): {}",
            d.op_id,
            d.kind.as_str(),
            d.entity_id,
            d.reason.as_code(),
            d.attempts,
            output::ago(d.at),
            d.message
        );
    }
    Ok(())
}

/// Prints what a discard would give up (the record's content).
async fn print_record(vault: &Vault, d: &DeadLetter) {
    let shown = match d.kind {
        EntityKind::Message => vault
            .message(d.entity_id.message())
            .await
            .map(|m| format!("message {} ({}): {}", m.id, m.role.as_str(), m.content)),
        EntityKind::Conversation => vault
            .conversation(d.entity_id.conversation())
            .await
            .map(|c| format!("conversation {}: {}", c.id, c.title)),
    };
    match shown {
        Ok(text) => println!("{text}"),
        Err(_) => println!(
            "{} {} (deleted on this device)",
            d.kind.as_str(),
            d.entity_id
        ),
    }
}

/// `sync unlink`: forgets the server, account and cursor; records and
/// pending changes stay, and go to whichever account is linked next.
async fn unlink(ctx: &Context) -> Result<()> {
    let (vault, _) = open_encrypted(ctx).await?;
    let replica = vault.replica();
    replica.set_sync_remote(None).await?;
    // End the saved session while it can still be named (best effort:
    // unlinking works offline too; the session then expires on its own).
    if let Ok((server, user)) = connection(&vault).await {
        if let Ok(Some(client)) = SyncClient::resume(vault.clone(), &server, &user, options()).await
        {
            if let Err(e) = client.logout().await {
                tracing::info!(error = %e, "could not end the session on the server");
            }
        }
    }
    for key in [
        USER_KEY,
        chatvault::meta_keys::SYNC_CURSOR,
        chatvault::meta_keys::SYNC_LAST_ERROR,
        chatvault::meta_keys::SYNC_SESSION,
    ] {
        replica.set_sync_meta(key, None).await?;
    }
    // The next account starts empty: give it the whole vault.
    let queued = replica.requeue_everything().await?;
    println!(
        "unlinked: this vault no longer syncs; its {queued} record(s) are queued for the next \
         account it is linked to"
    );
    Ok(())
}

/// `sync logout`: ends this device's session on the server and forgets
/// it here; the next sync command signs in with the passphrase again.
async fn logout(ctx: &Context) -> Result<()> {
    let (vault, _) = open_encrypted(ctx).await?;
    let (server, user) = connection(&vault).await?;
    match SyncClient::resume(vault, &server, &user, options()).await? {
        Some(client) => {
            client
                .logout()
                .await
                .with_context(|| format!("cannot log out of {user} on {server}"))?;
            println!("logged out of {user} on {server}");
        }
        None => println!("not logged in to {user} on {server}"),
    }
    Ok(())
}

/// `sync sessions [--revoke-others]`.
async fn sessions(ctx: &Context, args: SessionsArgs) -> Result<()> {
    let (vault, passphrase) = open_encrypted(ctx).await?;
    let client = resumed(vault, &passphrase, options()).await?;
    if args.revoke_others {
        let revoked = match client.revoke_other_sessions().await {
            Err(SyncError::Unauthorized(_)) => {
                sign_in_again(&client, &passphrase).await?;
                client.revoke_other_sessions().await?
            }
            done => done?,
        };
        if args.json.json {
            return output::json(&json!({ "revoked": revoked }));
        }
        println!("signed out {revoked} other session(s); this device stays signed in");
        return Ok(());
    }
    let list = match client.sessions().await {
        Err(SyncError::Unauthorized(_)) => {
            sign_in_again(&client, &passphrase).await?;
            client.sessions().await?
        }
        done => done?,
    };
    if args.json.json {
        return output::json(&list);
    }
    for s in &list {
        println!(
            "{}  {:<8} signed in {}, last used {}{}",
            s.id,
            s.client,
            output::time(chatvault::Timestamp(s.created_at)),
            output::time(chatvault::Timestamp(s.last_used_at)),
            if s.current { "  (this device)" } else { "" }
        );
    }
    Ok(())
}
