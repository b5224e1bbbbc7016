//! What crosses the JavaScript boundary, and how: arguments as JSON text,
//! answers as JSON text (or `undefined`), failures as `{code, message}`.

use chatvault::{KvError, VaultError};
use js_sys::{Object, Promise, Reflect};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use wasm_bindgen::JsValue;

/// A rejected call's value: `{code, message}`; `code` is the stable name
/// of the situation (`VaultError::code`), `message` the whole cause chain.
pub(crate) fn failure(code: &str, message: &str) -> JsValue {
    let error = Object::new();
    let _ = Reflect::set(&error, &"code".into(), &code.into());
    let _ = Reflect::set(&error, &"message".into(), &message.into());
    error.into()
}

/// The message of `e` followed by each of its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A rejected call, as the JS value it rejects with. Every error type of
/// chatvault converts into it, so `?` works throughout a call.
pub(crate) struct Failure(JsValue);

/// What a call resolves to.
pub(crate) type Answer = Result<JsValue, Failure>;

impl From<JsValue> for Failure {
    fn from(value: JsValue) -> Self {
        Failure(value)
    }
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        Failure(failure(e.code(), &chain(&e)))
    }
}

impl From<chatvault::StoreError> for Failure {
    fn from(e: chatvault::StoreError) -> Self {
        Failure(failure(e.code(), &chain(&e)))
    }
}

impl From<chatvault_sync::SyncError> for Failure {
    fn from(e: chatvault_sync::SyncError) -> Self {
        Failure(failure(e.code(), &chain(&e)))
    }
}

impl From<KvError> for Failure {
    fn from(e: KvError) -> Self {
        Failure(failure(e.code(), &chain(&e)))
    }
}

/// An `invalid` failure: `what` is wrong with the caller's input.
pub(crate) fn invalid(what: String) -> Failure {
    Failure(failure("invalid", &what))
}

/// `text` read as a `T`, or an `invalid` rejection naming `what`.
pub(crate) fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| invalid(format!("{what}: {e}")))
}

/// An id given as text.
pub(crate) fn id<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| invalid(format!("{what} {text:?}: {e}")))
}

/// `value` as JSON text for the package to parse.
pub(crate) fn json<T: Serialize>(value: &T) -> Answer {
    serde_json::to_string(value)
        .map(|text| JsValue::from_str(&text))
        .map_err(|e| {
            Failure(failure(
                "internal",
                &format!("cannot encode the answer: {e}"),
            ))
        })
}

/// Runs `work` as a promise with its own handle on `shared` (a vault, a
/// namespace, a sync client: an `Rc` or `Arc`), so the work outlives the
/// call that started it.
pub(crate) fn with<H: Clone, F, Fut>(shared: &H, work: F) -> Promise
where
    F: FnOnce(H) -> Fut,
    Fut: Future<Output = Answer> + 'static,
{
    promise(work(shared.clone()))
}

/// Runs `work` as a promise: its value on success, its error's
/// `{code, message}` on failure.
pub(crate) fn promise(work: impl Future<Output = Answer> + 'static) -> Promise {
    wasm_bindgen_futures::future_to_promise(async move { work.await.map_err(|Failure(e)| e) })
}
