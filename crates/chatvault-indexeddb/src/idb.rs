//! The thin layer over the browser's IndexedDB API: awaiting requests,
//! opening and finishing transactions, and turning DOM errors into
//! [`StoreError`]s.
//!
//! IndexedDB commits a transaction by itself as soon as no request of it
//! is pending when control returns to the event loop. Everything here
//! resolves on the request's own `success` event, and Rust futures resume
//! in a microtask of that event, so code that issues its next request
//! right after an `.await` on [`wait`] keeps the transaction alive. Awaiting
//! anything else (a timer, `fetch`, another transaction) inside a write
//! would let it commit half-done: the store never does.

use chatvault_store::StoreError;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use js_sys::{Array, Function, Object, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    DomException, Event, IdbDatabase, IdbFactory, IdbOpenDbRequest, IdbRequest,
    IdbRequestReadyState, IdbTransaction, IdbVersionChangeEvent,
};

/// A DOM error, copied out of JS (name and message) so it can travel as the
/// `Send + Sync` source of a [`StoreError`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{name}: {message}")]
pub(crate) struct DomError {
    /// The DOMException name (`QuotaExceededError`, `VersionError`, ...).
    pub(crate) name: String,
    /// The browser's message.
    pub(crate) message: String,
}

impl DomError {
    /// Reads a thrown JS value or a request's/transaction's error.
    pub(crate) fn from_js(value: &JsValue) -> Self {
        if let Some(e) = value.dyn_ref::<DomException>() {
            return Self {
                name: e.name(),
                message: e.message(),
            };
        }
        if let Some(e) = value.dyn_ref::<js_sys::Error>() {
            return Self {
                name: e.name().into(),
                message: e.message().into(),
            };
        }
        Self {
            name: "Error".into(),
            message: value.as_string().unwrap_or_else(|| format!("{value:?}")),
        }
    }

    fn named(name: &str, message: &str) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// A DOM error thrown back into JS (a migration's failure, which aborts
/// the versionchange transaction): a JS `Error` of the same name and
/// message, which `DomError::from_js` reads back.
impl From<DomError> for JsValue {
    fn from(e: DomError) -> Self {
        let error = js_sys::Error::new(&e.message);
        error.set_name(&e.name);
        error.into()
    }
}

/// Classifies a DOM error so the user learns what to do about it; the DOM
/// error stays attached as the source. `doing` says what the store was
/// doing ("writing a batch").
pub(crate) fn store_error(doing: &str, e: DomError) -> StoreError {
    let detail = |what: &str| format!("{doing}: {what}");
    match e.name.as_str() {
        "QuotaExceededError" => StoreError::Full {
            detail: detail("the browser's storage quota for this site is used up"),
            source: Some(Box::new(e)),
        },
        // The only uniqueness IndexedDB enforces for the store is a
        // message's id on insert (`WriteOp::InsertMessage`).
        "ConstraintError" => StoreError::InvalidRequest(detail(&format!(
            "a message the batch inserts already exists ({e})"
        ))),
        "NotFoundError" => StoreError::Corrupt {
            detail: detail("the database lacks an object store or index chatvault needs"),
            source: Some(Box::new(e)),
        },
        "InvalidStateError" | "UnknownError" | "SecurityError" | "InvalidAccessError" => {
            StoreError::Unavailable {
                detail: detail(
                    "IndexedDB is not usable (the database was closed or deleted, storage is \
                     blocked for this site, or the browser failed to write)",
                ),
                source: Some(Box::new(e)),
            }
        }
        "AbortError" | "TransactionInactiveError" => StoreError::Backend {
            detail: detail("the transaction was aborted before it committed; nothing was written"),
            source: Some(Box::new(e)),
        },
        _ => StoreError::Backend {
            detail: detail("IndexedDB failed"),
            source: Some(Box::new(e)),
        },
    }
}

/// The `indexedDB` factory of the page or worker this runs in.
pub(crate) fn factory() -> Result<IdbFactory, StoreError> {
    Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .ok()
        .filter(|f| !f.is_undefined() && !f.is_null())
        .and_then(|f| f.dyn_into::<IdbFactory>().ok())
        .ok_or_else(|| StoreError::Unavailable {
            detail: "this JavaScript environment has no IndexedDB".into(),
            source: None,
        })
}

/// What migrates a database from the version it has (0: new) to the one
/// asked for, inside the browser's versionchange transaction: a future
/// that may await that transaction's requests (and nothing else, or the
/// transaction commits under it).
pub(crate) type Upgrade =
    fn(&IdbDatabase, &IdbTransaction, u32) -> LocalBoxFuture<'static, Result<(), JsValue>>;

/// Opens (creating or upgrading as needed) the database `name` at
/// `version`: `upgrade` starts in `onupgradeneeded` (it runs on in
/// microtasks of that event and of its own requests' events, while the
/// versionchange transaction is active), and a failure there aborts the
/// versionchange transaction, leaving the database as it was.
/// A database at a newer version is
/// [`StoreError::NewerSchema`]. Returns the connection and the
/// `versionchange` listener that closes it when another tab needs to
/// upgrade (keep it as long as the connection).
pub(crate) async fn open_database(
    name: &str,
    version: u32,
    upgrade: Upgrade,
) -> Result<(IdbDatabase, Closure<dyn FnMut(Event)>), StoreError> {
    let request = factory()?
        .open_with_u32(name, version)
        .map_err(|e| store_error("opening", DomError::from_js(&e)))?;
    let failure: Rc<RefCell<Option<JsValue>>> = Rc::default();
    let on_upgrade = {
        let (request, failure) = (request.clone(), failure.clone());
        Closure::<dyn FnMut(IdbVersionChangeEvent)>::new(move |e: IdbVersionChangeEvent| {
            let started = || -> Result<_, JsValue> {
                let db: IdbDatabase = request.result()?.unchecked_into();
                let tx: IdbTransaction = request
                    .transaction()
                    .ok_or_else(|| JsValue::from_str("no versionchange transaction"))?;
                let migrating = upgrade(&db, &tx, e.old_version() as u32);
                Ok((tx, migrating))
            };
            match started() {
                Ok((tx, migrating)) => {
                    let failure = failure.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        if let Err(err) = migrating.await {
                            let _ = tx.abort();
                            *failure.borrow_mut() = Some(err);
                        }
                    });
                }
                Err(err) => *failure.borrow_mut() = Some(err),
            }
        })
    };
    request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let blocked = Closure::<dyn FnMut(Event)>::new(|_: Event| {
        tracing::warn!("opening an IndexedDB database waits for another tab to close it");
    });
    request.set_onblocked(Some(blocked.as_ref().unchecked_ref()));
    let opened = wait(&request).await;
    request.set_onupgradeneeded(None);
    request.set_onblocked(None);
    let db: IdbDatabase = match opened {
        Ok(db) => db.unchecked_into(),
        Err(e) if e.name == "VersionError" => {
            return Err(StoreError::NewerSchema {
                found: stored_version(name).await?,
                supported: version,
            })
        }
        Err(e) => {
            let cause = failure
                .borrow_mut()
                .take()
                .map_or(e, |f| DomError::from_js(&f));
            return Err(store_error("opening", cause));
        }
    };
    let on_version_change = {
        let db = db.clone();
        Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            tracing::info!("another connection upgrades an IndexedDB database; closing this one");
            db.close();
        })
    };
    db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
    Ok((db, on_version_change))
}

/// The version of an existing database (opened without asking for one).
async fn stored_version(name: &str) -> Result<u32, StoreError> {
    let request: IdbOpenDbRequest = factory()?
        .open(name)
        .map_err(|e| store_error("opening", DomError::from_js(&e)))?;
    let db: IdbDatabase = wait(&request)
        .await
        .map_err(|e| store_error("opening", e))?
        .unchecked_into();
    let version = db.version() as u32;
    db.close();
    Ok(version)
}

/// What a finished request holds: its result or its error.
fn outcome(request: &IdbRequest) -> Result<JsValue, DomError> {
    match request.error() {
        Ok(Some(e)) => Err(DomError::from_js(&e)),
        Ok(None) => request.result().map_err(|e| DomError::from_js(&e)),
        Err(e) => Err(DomError::from_js(&e)),
    }
}

/// Sets a one-shot listener for `success`/`error` (or `complete`/`abort`)
/// and removes it again when dropped, so a dropped future never leaves a
/// dangling callback behind.
struct Listener {
    target: Object,
    events: [&'static str; 2],
    _callback: Closure<dyn FnMut(Event)>,
}

impl Listener {
    fn new(target: &Object, events: [&'static str; 2]) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let tx = Rc::new(RefCell::new(Some(tx)));
        let callback = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(());
            }
        });
        for event in events {
            let _ = Reflect::set(
                target,
                &JsValue::from_str(&format!("on{event}")),
                callback.as_ref(),
            );
        }
        let listener = Self {
            target: target.clone(),
            events,
            _callback: callback,
        };
        (listener, rx)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for event in self.events {
            let _ = Reflect::set(
                &self.target,
                &JsValue::from_str(&format!("on{event}")),
                &JsValue::NULL,
            );
        }
    }
}

/// Waits for a request and returns its result. Resumes inside the
/// request's event, so the transaction is still active for the next one.
pub(crate) async fn wait(request: &IdbRequest) -> Result<JsValue, DomError> {
    if request.ready_state() == IdbRequestReadyState::Done {
        return outcome(request);
    }
    let (_listener, fired) = Listener::new(request, ["success", "error"]);
    let _ = fired.await;
    outcome(request)
}

/// Waits for a transaction to commit (`Ok`) or abort (`Err` with its
/// cause). Asks the browser to commit now rather than when it notices the
/// transaction is idle.
pub(crate) async fn finish(tx: &IdbTransaction) -> Result<(), DomError> {
    let (_listener, fired) = Listener::new(tx, ["complete", "abort"]);
    // `commit()` is an optimisation; browsers without it commit when idle.
    // (web-sys marks its binding deprecated, so it is called by name.)
    if let Ok(commit) = Reflect::get(tx, &JsValue::from_str("commit")) {
        if let Some(commit) = commit.dyn_ref::<Function>() {
            let _ = commit.call0(tx);
        }
    }
    let _ = fired.await;
    match tx.error() {
        Some(e) => Err(DomError::from_js(&e)),
        None => Ok(()),
    }
}

/// Opens a readwrite transaction with an explicit durability hint
/// (`"strict"` or `"relaxed"`). web-sys hides the options argument behind
/// an unstable flag, so the call passes a plain JS options object.
pub(crate) fn readwrite(
    db: &web_sys::IdbDatabase,
    stores: &[&str],
    durability: &str,
) -> Result<IdbTransaction, DomError> {
    let names: Array = stores.iter().map(|s| JsValue::from_str(s)).collect();
    let options = Object::new();
    Reflect::set(
        &options,
        &JsValue::from_str("durability"),
        &JsValue::from_str(durability),
    )
    .map_err(|e| DomError::from_js(&e))?;
    let open: Function = Reflect::get(db, &JsValue::from_str("transaction"))
        .map_err(|e| DomError::from_js(&e))?
        .dyn_into()
        .map_err(|_| DomError::named("TypeError", "IDBDatabase.transaction is not a function"))?;
    open.call3(db, &names, &JsValue::from_str("readwrite"), &options)
        .map_err(|e| DomError::from_js(&e))?
        .dyn_into()
        .map_err(|_| DomError::named("TypeError", "transaction() returned no IDBTransaction"))
}

/// Opens a readonly transaction over `stores`.
pub(crate) fn readonly(
    db: &web_sys::IdbDatabase,
    stores: &[&str],
) -> Result<IdbTransaction, DomError> {
    let names: Array = stores.iter().map(|s| JsValue::from_str(s)).collect();
    db.transaction_with_str_sequence(&names)
        .map_err(|e| DomError::from_js(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn the_browser_quota_is_the_stores_full_error_with_the_dom_error_as_source() {
        let e = store_error(
            "writing a batch",
            DomError::named("QuotaExceededError", "The quota has been exceeded."),
        );
        assert!(matches!(e, StoreError::Full { .. }), "{e:?}");
        let source = std::error::Error::source(&e).expect("source").to_string();
        assert_eq!(source, "QuotaExceededError: The quota has been exceeded.");
    }

    #[wasm_bindgen_test]
    fn other_dom_errors_map_to_errors_a_user_can_act_on() {
        let classify = |name| store_error("reading", DomError::named(name, "m"));
        assert!(matches!(
            classify("NotFoundError"),
            StoreError::Corrupt { .. }
        ));
        assert!(matches!(
            classify("InvalidStateError"),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            classify("UnknownError"),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(classify("AbortError"), StoreError::Backend { .. }));
        assert!(matches!(
            classify("ConstraintError"),
            StoreError::InvalidRequest(_)
        ));
    }
}
