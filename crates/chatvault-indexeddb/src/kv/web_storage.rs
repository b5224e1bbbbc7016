//! localStorage and sessionStorage namespaces.
//!
//! An item's name is `chatvault:<namespace>:<key>`. Namespaces cannot hold
//! `:` (see `check_namespace`), so the first `:` after the prefix ends the
//! namespace and two namespaces never share an item. Items without the
//! prefix belong to others on the origin and are never read, listed or
//! removed.
//!
//! Both areas exist only in a window: in a Web Worker (where the vault
//! runs) opening one is [`KvError::Unavailable`], and the page keeps such
//! state itself (sealing it through the worker's vault if it must be
//! encrypted).

use super::kv_error;
use crate::idb::DomError;
use async_trait::async_trait;
use chatvault_store::kv::{check_key, check_namespace, entry_bytes};
use chatvault_store::{KvError, KvLimits, KvResult, KvStore, KvUsage};
use web_sys::Storage;

/// Which web storage area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebStorage {
    /// `localStorage`: every tab of the origin, until cleared.
    Local,
    /// `sessionStorage`: this tab, until it closes.
    Session,
}

impl WebStorage {
    fn name(self) -> &'static str {
        match self {
            WebStorage::Local => "localStorage",
            WebStorage::Session => "sessionStorage",
        }
    }

    /// The area, if this context offers it.
    fn open(self) -> KvResult<Storage> {
        let unavailable = |why: String| KvError::Unavailable {
            detail: format!("{} {why}", self.name()),
        };
        let window = web_sys::window().ok_or_else(|| {
            unavailable(
                "exists only in a page, not in a Web Worker: use the IndexedDB kv there".into(),
            )
        })?;
        let area = match self {
            WebStorage::Local => window.local_storage(),
            WebStorage::Session => window.session_storage(),
        };
        match area {
            Ok(Some(storage)) => Ok(storage),
            Ok(None) => Err(unavailable("is not offered by this browser".into())),
            Err(e) => Err(unavailable(format!(
                "is blocked for this site ({})",
                DomError::from_js(&e)
            ))),
        }
    }
}

/// One namespace of localStorage or sessionStorage.
#[derive(Debug, Clone)]
pub struct WebStorageKv {
    storage: Storage,
    area: WebStorage,
    namespace: String,
    /// `chatvault:<namespace>:`
    prefix: String,
    limits: KvLimits,
}

impl WebStorageKv {
    /// Namespace `namespace` of `area`, guarded by `limits`
    /// ([`KvLimits::web_storage`] is the default to use).
    pub fn open(area: WebStorage, namespace: &str, limits: KvLimits) -> KvResult<WebStorageKv> {
        check_namespace(namespace)?;
        Ok(WebStorageKv {
            storage: area.open()?,
            area,
            namespace: namespace.to_owned(),
            prefix: format!("chatvault:{namespace}:"),
            limits,
        })
    }

    /// Which area this namespace lives in.
    pub fn area(&self) -> WebStorage {
        self.area
    }

    fn item(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn failed(&self, doing: &str, e: &wasm_bindgen::JsValue) -> KvError {
        kv_error(
            &format!("{doing} in {}", self.area.name()),
            &DomError::from_js(e),
        )
    }

    /// This namespace's `(key, value)` pairs, in storage order.
    fn entries(&self) -> KvResult<Vec<(String, String)>> {
        let length = self
            .storage
            .length()
            .map_err(|e| self.failed("listing", &e))?;
        let mut entries = Vec::new();
        for i in 0..length {
            let Some(name) = self
                .storage
                .key(i)
                .map_err(|e| self.failed("listing", &e))?
            else {
                continue;
            };
            let Some(key) = name.strip_prefix(&self.prefix) else {
                continue;
            };
            if let Some(value) = self
                .storage
                .get_item(&name)
                .map_err(|e| self.failed("reading", &e))?
            {
                entries.push((key.to_owned(), value));
            }
        }
        Ok(entries)
    }
}

#[async_trait(?Send)]
impl KvStore for WebStorageKv {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn get(&self, key: &str) -> KvResult<Option<String>> {
        check_key(key)?;
        self.storage
            .get_item(&self.item(key))
            .map_err(|e| self.failed("reading", &e))
    }

    async fn set(&self, key: &str, value: &str) -> KvResult<()> {
        check_key(key)?;
        if self.limits.max_total_bytes.is_some() {
            let entries = self.entries()?;
            let entries = entries.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            self.limits.check_among(key, value, entries)?;
        } else {
            self.limits.check(key, value, 0, 0)?;
        }
        // One call: the browser stores the whole item or throws (the
        // quota) and keeps the old one.
        self.storage
            .set_item(&self.item(key), value)
            .map_err(|e| self.failed("writing", &e))
    }

    async fn remove(&self, key: &str) -> KvResult<()> {
        check_key(key)?;
        self.storage
            .remove_item(&self.item(key))
            .map_err(|e| self.failed("removing", &e))
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        let mut keys: Vec<String> = self.entries()?.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        Ok(keys)
    }

    async fn clear(&self) -> KvResult<()> {
        for (key, _) in self.entries()? {
            self.storage
                .remove_item(&self.item(&key))
                .map_err(|e| self.failed("removing", &e))?;
        }
        Ok(())
    }

    async fn usage(&self) -> KvResult<KvUsage> {
        let entries = self.entries()?;
        Ok(KvUsage {
            entries: entries.len() as u64,
            bytes: entries.iter().map(|(k, v)| entry_bytes(k, v)).sum(),
        })
    }
}
