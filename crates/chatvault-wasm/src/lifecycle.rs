//! Export and import across the boundary: an export's bytes out (the
//! package makes them a `Blob`), an import's bytes in (read from a `File`
//! or `Blob`), with progress reported to a JS callback.
//!
//! The vault reports progress through a `Send + Sync` callback that may
//! not hold a JS function, so it records the latest figure and a relay
//! running beside the work hands it to the JS callback every 100 ms (and
//! once more at the end). The relay runs whenever the work awaits the
//! browser, which the store does every few hundred records.
//!
//! Both hold the whole file in memory (the browser gives a `Blob` its
//! bytes at once); streaming through `Blob.stream()` is the next step.

use crate::boundary::{json, promise, Answer, Failure};
use chatvault::{
    ExportEncryption, ExportOptions, ImportOptions, Progress, ProgressFn, ProgressPhase, Vault,
};
use futures::future::{select, Either};
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use std::sync::{Arc, Mutex};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Resolves after `ms` milliseconds (the page's or the worker's timer).
async fn sleep(ms: i32) {
    let wait = Promise::new(&mut |resolve, _| {
        let set_timeout = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        match set_timeout {
            Some(set_timeout) => {
                let _ = set_timeout.call2(&JsValue::NULL, &resolve, &ms.into());
            }
            None => {
                let _ = resolve.call0(&JsValue::NULL);
            }
        }
    });
    let _ = JsFuture::from(wait).await;
}

fn phase(phase: ProgressPhase) -> &'static str {
    match phase {
        ProgressPhase::Exporting => "exporting",
        ProgressPhase::Validating => "validating",
        ProgressPhase::Importing => "importing",
        ProgressPhase::Rekeying => "rekeying",
    }
}

/// Calls `callback({phase, done, total})`; a throwing callback is logged,
/// never allowed to stop the work.
fn report(callback: &Function, progress: Progress) {
    let value = Object::new();
    let _ = Reflect::set(&value, &"phase".into(), &phase(progress.phase).into());
    let _ = Reflect::set(&value, &"done".into(), &(progress.done as f64).into());
    let total = progress.total.map_or(JsValue::NULL, |t| (t as f64).into());
    let _ = Reflect::set(&value, &"total".into(), &total);
    if let Err(e) = callback.call1(&JsValue::NULL, &value) {
        tracing::warn!(error = ?e, "a progress callback threw");
    }
}

/// Runs `work` with a progress callback that reaches `callback`.
async fn with_progress<F, Fut>(callback: Option<Function>, work: F) -> Answer
where
    F: FnOnce(Option<ProgressFn>) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let Some(callback) = callback else {
        return work(None).await;
    };
    let latest: Arc<Mutex<Option<Progress>>> = Arc::default();
    let progress: ProgressFn = {
        let latest = latest.clone();
        Arc::new(move |p| *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(p))
    };
    let take = move || latest.lock().unwrap_or_else(|e| e.into_inner()).take();
    let relay = async {
        loop {
            sleep(100).await;
            if let Some(p) = take() {
                report(&callback, p);
            }
        }
    };
    let outcome = match select(Box::pin(work(Some(progress))), Box::pin(relay)).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(((), _)) => unreachable!("the relay never ends"),
    };
    if let Some(p) = take() {
        report(&callback, p);
    }
    outcome
}

/// The whole vault as an export file: resolves to `[bytes, reportJson]`.
pub(crate) fn export(
    vault: Arc<Vault>,
    passphrase: Option<String>,
    callback: Option<Function>,
) -> Promise {
    promise(async move {
        with_progress(callback, |progress| async move {
            let options = ExportOptions {
                encryption: passphrase.as_deref().map(ExportEncryption::new),
                progress,
            };
            let (bytes, report) = vault.export(Vec::new(), options).await?;
            let out = Array::new();
            out.push(&Uint8Array::from(bytes.as_slice()));
            out.push(&json(&report)?);
            Ok::<JsValue, Failure>(out.into())
        })
        .await
    })
}

/// Imports an export file's `bytes`: resolves to the report's JSON.
pub(crate) fn import(
    vault: Arc<Vault>,
    bytes: Vec<u8>,
    passphrase: Option<String>,
    callback: Option<Function>,
) -> Promise {
    promise(async move {
        with_progress(callback, |progress| async move {
            let mut options = match &passphrase {
                Some(p) => ImportOptions::with_passphrase(p),
                None => ImportOptions::default(),
            };
            options.progress = progress;
            json(&vault.import(bytes, options).await?)
        })
        .await
    })
}
