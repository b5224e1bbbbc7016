//! `openKv` and `WasmKv`: key-value namespaces for the page's state.

use crate::boundary::{invalid, json, promise, with, Failure};
use chatvault::{KvLimits, KvStore};
use chatvault_indexeddb::kv::{IndexedDbKvArea, WebStorage, WebStorageKv, KV_DATABASE};
use js_sys::Promise;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Namespace `namespace` of `area`, with the area's default size guard.
pub(crate) async fn open(area: &str, namespace: &str) -> Result<Box<dyn KvStore>, Failure> {
    Ok(match area {
        "local" => Box::new(WebStorageKv::open(
            WebStorage::Local,
            namespace,
            KvLimits::web_storage(),
        )?),
        "session" => Box::new(WebStorageKv::open(
            WebStorage::Session,
            namespace,
            KvLimits::web_storage(),
        )?),
        "indexeddb" => Box::new(
            IndexedDbKvArea::open(KV_DATABASE)
                .await?
                .namespace(namespace, KvLimits::indexed_db())?,
        ),
        other => {
            return Err(invalid(format!(
                "key-value area {other:?}: expected \"local\", \"session\" or \"indexeddb\""
            )))
        }
    })
}

/// Opens a plain (not encrypted) key-value namespace of `area`
/// (`"local"`, `"session"` or `"indexeddb"`). For encrypted state use
/// `WasmVault.sealedKv`.
#[wasm_bindgen(js_name = openKv)]
pub fn open_kv(area: String, namespace: String) -> Promise {
    promise(async move { Ok(WasmKv::new(open(&area, &namespace).await?).into()) })
}

/// One key-value namespace; values are text.
#[wasm_bindgen]
pub struct WasmKv {
    kv: Rc<dyn KvStore>,
}

impl WasmKv {
    pub(crate) fn new(kv: Box<dyn KvStore>) -> WasmKv {
        WasmKv { kv: kv.into() }
    }
}

#[wasm_bindgen]
impl WasmKv {
    /// The namespace's name.
    #[wasm_bindgen(getter)]
    pub fn namespace(&self) -> String {
        self.kv.namespace().to_owned()
    }

    /// The value under `key`, or `null`.
    pub fn get(&self, key: String) -> Promise {
        with(&self.kv, |kv| async move {
            Ok(match kv.get(&key).await? {
                Some(value) => JsValue::from_str(&value),
                None => JsValue::NULL,
            })
        })
    }

    /// Stores `value` under `key`, whole or not at all.
    pub fn set(&self, key: String, value: String) -> Promise {
        with(&self.kv, |kv| async move {
            kv.set(&key, &value).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Removes `key`.
    pub fn remove(&self, key: String) -> Promise {
        with(&self.kv, |kv| async move {
            kv.remove(&key).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The namespace's keys, sorted (JSON text).
    pub fn keys(&self) -> Promise {
        with(&self.kv, |kv| async move { json(&kv.keys().await?) })
    }

    /// Removes every key of the namespace.
    pub fn clear(&self) -> Promise {
        with(&self.kv, |kv| async move {
            kv.clear().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// `{entries, bytes}` of the namespace (JSON text).
    pub fn usage(&self) -> Promise {
        with(&self.kv, |kv| async move {
            let usage = kv.usage().await?;
            json(&serde_json::json!({ "entries": usage.entries, "bytes": usage.bytes }))
        })
    }
}
