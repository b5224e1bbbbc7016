//! Sync across the boundary: `WasmVault.sync` (register, log in or resume
//! an account for an open vault), `joinVault` (a new device), and the
//! `WasmSync` handle — the loop, its status as JSON pushed to a callback,
//! sync-now, dead letters and sessions.
//!
//! The client is `chatvault_sync::SyncClient` over the browser transport
//! (`fetch` with the HttpOnly session cookie, a browser `WebSocket`): the
//! binding only translates. Which tab runs the loop is the package's
//! business (a Web Lock), not this module's: `start` runs it here.

use crate::boundary::{id, invalid, json, parse, promise, with, Answer, Failure};
use chatvault::{Store, Vault, VaultOptions};
use chatvault_core::OpId;
use chatvault_sync::{
    DeadLetter, SyncClient, SyncOptions, SyncReport, SyncState, SyncStatus, SyncTask,
};
use futures::future::{FutureExt as _, RemoteHandle};
use js_sys::{Array, Function, Promise};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use wasm_bindgen::prelude::*;

/// How to sign in, and the loop's settings: the JSON `sync` and
/// `joinVault` take.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SyncIn {
    /// The server's base URL (`https://sync.example`).
    server: String,
    username: String,
    /// Needed to register, log in and join; not to resume.
    passphrase: Option<String>,
    /// `"register"`, `"login"`, `"resume"` (the session saved in the vault,
    /// or `null`) or `"resumeOrLogin"` (the default).
    mode: Option<String>,
    /// Seconds between periodic syncs while idle (default 300; pokes and
    /// local writes sync at once anyway).
    interval_seconds: Option<f64>,
    /// Whether to hold the realtime WebSocket (default true).
    realtime: Option<bool>,
}

impl SyncIn {
    fn options(&self) -> Result<SyncOptions, Failure> {
        let mut options = SyncOptions::default();
        if let Some(seconds) = self.interval_seconds {
            if !(1.0..=86_400.0).contains(&seconds) {
                return Err(invalid(format!(
                    "intervalSeconds {seconds}: expected 1 to 86400"
                )));
            }
            options.interval = Duration::from_secs_f64(seconds);
        }
        if let Some(realtime) = self.realtime {
            options.realtime = realtime;
        }
        Ok(options)
    }

    fn passphrase(&self) -> Result<&str, Failure> {
        self.passphrase
            .as_deref()
            .ok_or_else(|| invalid("a passphrase is needed to sign in".into()))
    }
}

/// Signs `vault` in to an account as `input` says; `None` when resuming
/// finds no saved session.
pub(crate) async fn connect(vault: Arc<Vault>, input: &str) -> Result<Option<WasmSync>, Failure> {
    let input: SyncIn = parse("sync settings", input)?;
    let options = input.options()?;
    let (server, username) = (input.server.as_str(), input.username.as_str());
    let client = match input.mode.as_deref().unwrap_or("resumeOrLogin") {
        "register" => {
            SyncClient::register(vault, server, username, input.passphrase()?, options).await?
        }
        "login" => SyncClient::login(vault, server, username, input.passphrase()?, options).await?,
        "resume" => match SyncClient::resume(vault, server, username, options).await? {
            Some(client) => client,
            None => return Ok(None),
        },
        "resumeOrLogin" => match &input.passphrase {
            Some(passphrase) => {
                SyncClient::resume_or_login(vault, server, username, passphrase, options).await?
            }
            None => match SyncClient::resume(vault, server, username, options).await? {
                Some(client) => client,
                None => return Ok(None),
            },
        },
        other => {
            return Err(invalid(format!(
                "mode {other:?}: expected \"register\", \"login\", \"resume\" or \"resumeOrLogin\""
            )))
        }
    };
    Ok(Some(WasmSync::new(client)))
}

/// A new device: signs in to the account `input` names, creates (or opens)
/// the vault in the IndexedDB database `name` on the account's keys, and
/// resolves to `[WasmVault, WasmSync]`. Nothing is synced yet: `start` or
/// `syncNow` brings the history.
#[wasm_bindgen(js_name = joinVault)]
pub fn join_vault(name: String, input: String) -> Promise {
    promise(async move {
        let parsed: SyncIn = parse("sync settings", &input)?;
        let options = parsed.options()?;
        let store = crate::vault::open_store(&name, None).await?;
        let client = SyncClient::join(
            store as Arc<dyn Store>,
            VaultOptions::default(),
            &parsed.server,
            &parsed.username,
            parsed.passphrase()?,
            options,
        )
        .await?;
        let vault = crate::vault::WasmVault::new(client.vault().clone(), name);
        let pair = Array::new();
        pair.push(&vault.into());
        pair.push(&WasmSync::new(client).into());
        Ok(pair.into())
    })
}

/// One vault's sync with one account.
#[wasm_bindgen]
pub struct WasmSync {
    client: Rc<SyncClient>,
    /// The running loop, if started.
    task: Rc<RefCell<Option<SyncTask>>>,
    /// The task feeding the status callback; dropped, it stops.
    watcher: RefCell<Option<RemoteHandle<()>>>,
}

impl WasmSync {
    fn new(client: SyncClient) -> WasmSync {
        WasmSync {
            client: Rc::new(client),
            task: Rc::default(),
            watcher: RefCell::default(),
        }
    }
}

/// [`SyncStatus`] as the package shows it (times in Unix ms).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusOut<'a> {
    /// `idle`, `syncing`, `offline` or `error`.
    state: &'static str,
    /// With `error`: why.
    error: Option<&'a str>,
    /// The stable code of the failure shown (`unauthorized`: ask for the
    /// passphrase and call `signIn`).
    error_code: Option<&'a str>,
    last_synced_at: Option<i64>,
    pending: u64,
    dead_letters: usize,
    last_error: Option<&'a str>,
    realtime: bool,
    received: u64,
}

fn status_json(status: &SyncStatus) -> String {
    let (state, error) = match &status.state {
        SyncState::Idle => ("idle", None),
        SyncState::Syncing => ("syncing", None),
        SyncState::Offline => ("offline", None),
        SyncState::Error(why) => ("error", Some(why.as_str())),
    };
    let out = StatusOut {
        state,
        error,
        error_code: status.error_code.as_deref(),
        last_synced_at: status.last_synced_at.map(|t| t.as_millis()),
        pending: status.pending,
        dead_letters: status.dead_letters,
        last_error: status.last_error.as_deref(),
        realtime: status.realtime,
        received: status.received,
    };
    // Plain numbers, strings and booleans: encoding cannot fail.
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".into())
}

/// What `syncNow` did.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportOut {
    pushed: u64,
    superseded: u64,
    dead_lettered: u64,
    restamped: u64,
    pulled: u64,
    pages: u64,
    skipped: u64,
    resynced: bool,
    dropped: u64,
    requeued: u64,
}

impl From<&SyncReport> for ReportOut {
    fn from(r: &SyncReport) -> Self {
        ReportOut {
            pushed: r.push.applied,
            superseded: r.push.superseded + r.pull.superseded,
            dead_lettered: r.push.dead_lettered,
            restamped: r.push.restamped,
            pulled: r.pull.applied,
            pages: r.pull.pages,
            skipped: r.pull.skipped,
            resynced: r.pull.resynced,
            dropped: r.pull.dropped,
            requeued: r.pull.requeued + r.pull.marks_pushed,
        }
    }
}

/// A dead letter, with when it is retried by itself.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterOut {
    #[serde(flatten)]
    letter: DeadLetter,
    next_retry_at: Option<i64>,
}

fn letters_json(letters: Vec<DeadLetter>) -> Answer {
    let out: Vec<DeadLetterOut> = letters
        .into_iter()
        .map(|letter| DeadLetterOut {
            next_retry_at: letter.next_retry_at().map(|t| t.as_millis()),
            letter,
        })
        .collect();
    json(&out)
}

#[wasm_bindgen]
impl WasmSync {
    /// The account name.
    #[wasm_bindgen(getter)]
    pub fn username(&self) -> String {
        self.client.username().to_owned()
    }

    /// The status now, as JSON.
    pub fn status(&self) -> String {
        status_json(&self.client.status().borrow())
    }

    /// Calls `callback(statusJson)` now and on every change of the status,
    /// until another callback replaces it or the handle is freed.
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(&self, callback: Function) {
        let mut status = self.client.status();
        let (watch, handle) = async move {
            loop {
                let text = status_json(&status.borrow_and_update());
                if let Err(e) = callback.call1(&JsValue::NULL, &text.into()) {
                    tracing::warn!(error = ?e, "a sync status listener threw");
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        }
        .remote_handle();
        wasm_bindgen_futures::spawn_local(watch);
        *self.watcher.borrow_mut() = Some(handle);
    }

    /// Starts the background loop here (idempotent): sync now, on every
    /// `notify`, poke and reconnect, and periodically; paused offline.
    pub fn start(&self) {
        let mut task = self.task.borrow_mut();
        if task.is_none() {
            *task = Some(self.client.spawn());
            tracing::info!(username = self.client.username(), "sync loop started");
        }
    }

    /// Stops the loop (after the step in progress); resolves when stopped.
    pub fn stop(&self) -> Promise {
        let task = self.task.borrow_mut().take();
        promise(async move {
            if let Some(task) = task {
                task.stop().await;
                tracing::info!("sync loop stopped");
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Whether the loop runs here.
    #[wasm_bindgen(getter)]
    pub fn running(&self) -> bool {
        self.task.borrow().is_some()
    }

    /// Tells the loop the vault was written: it pushes soon.
    pub fn notify(&self) {
        self.client.notify();
    }

    /// Pushes, then pulls, now; resolves to what it did.
    #[wasm_bindgen(js_name = syncNow)]
    pub fn sync_now(&self) -> Promise {
        with(&self.client, |client| async move {
            let report = client.sync_once().await?;
            json(&ReportOut::from(&report))
        })
    }

    /// The changes the server refused, oldest first.
    #[wasm_bindgen(js_name = deadLetters)]
    pub fn dead_letters(&self) -> Promise {
        with(&self.client, |client| async move {
            letters_json(client.dead_letters().await?)
        })
    }

    /// Makes a dead letter (by op id) pending again; resolves to whether
    /// there was one.
    #[wasm_bindgen(js_name = retryDeadLetter)]
    pub fn retry_dead_letter(&self, op: String) -> Promise {
        with(&self.client, |client| async move {
            let op: OpId = id("op id", &op)?;
            Ok(client.retry_dead_letter(op).await?.into())
        })
    }

    /// Makes every dead letter pending again; resolves to how many.
    #[wasm_bindgen(js_name = retryAllDeadLetters)]
    pub fn retry_all_dead_letters(&self) -> Promise {
        with(&self.client, |client| async move {
            Ok((client.retry_all_dead_letters().await? as f64).into())
        })
    }

    /// Gives up on a dead letter for good (the record stays, unsynced);
    /// resolves to the discarded letter's JSON, or `null`.
    #[wasm_bindgen(js_name = discardDeadLetter)]
    pub fn discard_dead_letter(&self, op: String) -> Promise {
        with(&self.client, |client| async move {
            let op: OpId = id("op id", &op)?;
            match client.discard_dead_letter(op).await? {
                Some(letter) => letters_json(vec![letter]),
                None => Ok(JsValue::NULL),
            }
        })
    }

    /// Signs in again with the current passphrase (after `unauthorized`).
    #[wasm_bindgen(js_name = signIn)]
    pub fn sign_in(&self, passphrase: String) -> Promise {
        with(&self.client, |client| async move {
            client.sign_in(&passphrase).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Adopts the sign-in another tab saved in the vault; resolves to
    /// whether there was one.
    #[wasm_bindgen(js_name = reloadSavedSession)]
    pub fn reload_saved_session(&self) -> Promise {
        with(&self.client, |client| async move {
            Ok(client.reload_saved_session().await?.into())
        })
    }

    /// Ends this browser's session on the server (and forgets the saved
    /// one). The vault stays usable offline.
    pub fn logout(&self) -> Promise {
        let task = self.task.borrow_mut().take();
        with(&self.client, |client| async move {
            if let Some(task) = task {
                task.stop().await;
            }
            client.logout().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The account's sessions, most recently used first.
    pub fn sessions(&self) -> Promise {
        with(&self.client, |client| async move {
            json(&client.sessions().await?)
        })
    }

    /// Signs out every other session of the account; resolves to how many.
    #[wasm_bindgen(js_name = revokeOtherSessions)]
    pub fn revoke_other_sessions(&self) -> Promise {
        with(&self.client, |client| async move {
            Ok((client.revoke_other_sessions().await? as f64).into())
        })
    }

    /// Changes the passphrase on the server, then in the vault.
    #[wasm_bindgen(js_name = changePassphrase)]
    pub fn change_passphrase(&self, old: String, new: String) -> Promise {
        with(&self.client, |client| async move {
            client.change_passphrase(&old, &new).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Rotates the data key on the server, then in the vault.
    #[wasm_bindgen(js_name = rotateDataKey)]
    pub fn rotate_data_key(&self, passphrase: String) -> Promise {
        with(&self.client, |client| async move {
            client.rotate_data_key(&passphrase).await?;
            Ok(JsValue::UNDEFINED)
        })
    }
}
