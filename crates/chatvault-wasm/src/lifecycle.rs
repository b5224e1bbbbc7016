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
//! Both stream, so the wasm heap (which never shrinks) stays flat in the
//! size of the vault:
//! - An export's writer hands full 1 MiB chunks to the relay, which turns
//!   each into a `Blob` part at once; the browser keeps the parts in its
//!   blob storage (on disk when large).
//! - An import in a worker reads the `File`/`Blob` in 1 MiB slices with
//!   `FileReaderSync` (a worker's synchronous reader: the import's parser
//!   pulls bytes synchronously), and the vault writes it in rounds of
//!   records (see its import). On a page's main thread, which has no
//!   synchronous reader, the file's bytes are held once and read through
//!   a cursor.

use crate::boundary::{json, promise, Answer};
use chatvault::{
    ExportEncryption, ExportOptions, ImportOptions, Progress, ProgressFn, ProgressPhase, Vault,
};
use futures::future::{select, Either};
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
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
        ProgressPhase::Migrating => "migrating",
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

/// Runs `work` with a progress callback that reaches `callback`; while it
/// runs, a relay calls `tick` (and hands the latest progress to
/// `callback`) every `every_ms` milliseconds and once more at the end.
pub(crate) async fn relayed<F, Fut>(
    callback: Option<Function>,
    every_ms: i32,
    mut tick: impl FnMut(),
    work: F,
) -> Answer
where
    F: FnOnce(Option<ProgressFn>) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let latest: Arc<Mutex<Option<Progress>>> = Arc::default();
    let progress: Option<ProgressFn> = callback.as_ref().map(|_| {
        let latest = latest.clone();
        Arc::new(move |p| *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(p)) as ProgressFn
    });
    let take = move || latest.lock().unwrap_or_else(|e| e.into_inner()).take();
    let mut relay_once = move || {
        tick();
        if let (Some(callback), Some(p)) = (&callback, take()) {
            report(callback, p);
        }
    };
    let outcome = {
        let relay = async {
            loop {
                sleep(every_ms).await;
                relay_once();
            }
        };
        match select(Box::pin(work(progress)), Box::pin(relay)).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(((), _)) => unreachable!("the relay never ends"),
        }
    };
    relay_once();
    outcome
}

/// Bytes of one export chunk handed to the browser.
const CHUNK: usize = 1 << 20;

/// The export's `Write`: fills a chunk, queues it when full.
struct Chunks {
    filling: Vec<u8>,
    full: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Chunks {
    fn queue(&mut self) {
        if !self.filling.is_empty() {
            let chunk = std::mem::replace(&mut self.filling, Vec::with_capacity(CHUNK));
            self.full
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(chunk);
        }
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.filling.len();
        let taken = room.min(buf.len());
        self.filling.extend_from_slice(&buf[..taken]);
        if self.filling.len() == CHUNK {
            self.queue();
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Moves the queued chunks into `parts` as `Blob`s (freeing their bytes
/// in the wasm heap).
fn drain(full: &Mutex<Vec<Vec<u8>>>, parts: &Array) -> Result<(), JsValue> {
    let chunks = std::mem::take(&mut *full.lock().unwrap_or_else(|e| e.into_inner()));
    for chunk in chunks {
        let bytes = Array::of1(&Uint8Array::from(chunk.as_slice()));
        let part = web_sys::Blob::new_with_u8_array_sequence(&bytes)?;
        parts.push(&part);
    }
    Ok(())
}

/// The whole vault as an export file: resolves to `[blob, reportJson]`.
pub(crate) fn export(
    vault: Arc<Vault>,
    passphrase: Option<String>,
    callback: Option<Function>,
) -> Promise {
    promise(async move {
        let full: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let parts = Array::new();
        let failed: Rc<RefCell<Option<JsValue>>> = Rc::default();
        let tick = {
            let (full, parts, failed) = (full.clone(), parts.clone(), failed.clone());
            move || {
                if let Err(e) = drain(&full, &parts) {
                    failed.borrow_mut().get_or_insert(e);
                }
            }
        };
        let sink = full.clone();
        let report = relayed(callback, 50, tick, |progress| async move {
            let options = ExportOptions {
                encryption: passphrase.as_deref().map(ExportEncryption::new),
                progress,
            };
            let out = Chunks {
                filling: Vec::with_capacity(CHUNK),
                full: sink,
            };
            let (mut out, report) = vault.export(out, options).await?;
            out.queue();
            json(&report)
        })
        .await?;
        drain(&full, &parts)?;
        if let Some(e) = failed.borrow_mut().take() {
            return Err(e.into());
        }
        let options = web_sys::BlobPropertyBag::new();
        options.set_type("application/octet-stream");
        let blob = web_sys::Blob::new_with_blob_sequence_and_options(&parts, &options)?;
        Ok(Array::of2(&blob, &report).into())
    })
}

/// Imports an export file's `bytes`: resolves to the report's JSON.
pub(crate) fn import(
    vault: Arc<Vault>,
    bytes: Vec<u8>,
    passphrase: Option<String>,
    callback: Option<Function>,
) -> Promise {
    import_from(vault, SharedBytes(bytes.into()), passphrase, callback)
}

/// Imports `source`, relaying progress to `callback`: resolves to the
/// report's JSON.
fn import_from(
    vault: Arc<Vault>,
    source: impl chatvault::ImportSource,
    passphrase: Option<String>,
    callback: Option<Function>,
) -> Promise {
    promise(async move {
        relayed(
            callback,
            100,
            || {},
            |progress| async move {
                let mut options = match &passphrase {
                    Some(p) => ImportOptions::with_passphrase(p),
                    None => ImportOptions::default(),
                };
                options.progress = progress;
                json(&vault.import(source, options).await?)
            },
        )
        .await
    })
}

/// An import file's bytes, read by every pass through a cursor (never
/// copied: `Vec<u8>` as a source clones itself per pass).
struct SharedBytes(Arc<[u8]>);

impl chatvault::ImportSource for SharedBytes {
    fn open(&self) -> std::io::Result<chatvault::ImportReader> {
        Ok(Box::new(std::io::Cursor::new(SharedSlice(self.0.clone()))))
    }

    fn size(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
}

/// `Arc<[u8]>` as `AsRef<[u8]>`, for `Cursor`.
struct SharedSlice(Arc<[u8]>);

impl AsRef<[u8]> for SharedSlice {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Bytes read from a `Blob` at a time.
const SLICE: f64 = (1 << 20) as f64;

/// An import file as a `Blob` (a `File`), read in slices: only where
/// `FileReaderSync` exists (a worker).
struct BlobSource(web_sys::Blob);

fn js_io(what: &str, e: JsValue) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e:?}"))
}

impl chatvault::ImportSource for BlobSource {
    fn open(&self) -> std::io::Result<chatvault::ImportReader> {
        let reader = web_sys::FileReaderSync::new()
            .map_err(|e| js_io("cannot read the file synchronously here", e))?;
        Ok(Box::new(BlobReader {
            blob: self.0.clone(),
            reader,
            at: 0.0,
            size: self.0.size(),
            chunk: Vec::new(),
            pos: 0,
        }))
    }

    fn size(&self) -> Option<u64> {
        Some(self.0.size() as u64)
    }
}

/// Reads a `Blob` front to back, one slice in memory at a time.
struct BlobReader {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
    /// Where the next slice starts.
    at: f64,
    size: f64,
    chunk: Vec<u8>,
    /// How much of `chunk` was read.
    pos: usize,
}

impl std::io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.chunk.len() {
            if self.at >= self.size {
                return Ok(0);
            }
            let end = (self.at + SLICE).min(self.size);
            let slice = self
                .blob
                .slice_with_f64_and_f64(self.at, end)
                .map_err(|e| js_io("cannot slice the file", e))?;
            let buffer = self
                .reader
                .read_as_array_buffer(&slice)
                .map_err(|e| js_io("cannot read the file (was it changed or removed?)", e))?;
            let bytes = Uint8Array::new(&buffer);
            self.chunk.resize(bytes.length() as usize, 0);
            bytes.copy_to(&mut self.chunk);
            self.pos = 0;
            self.at = end;
            if self.chunk.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Imports a `Blob`/`File` read in slices (in a worker): resolves to the
/// report's JSON.
pub(crate) fn import_blob(
    vault: Arc<Vault>,
    blob: web_sys::Blob,
    passphrase: Option<String>,
    callback: Option<Function>,
) -> Promise {
    import_from(vault, BlobSource(blob), passphrase, callback)
}
