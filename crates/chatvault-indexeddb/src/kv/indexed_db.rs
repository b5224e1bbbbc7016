//! Key-value namespaces in IndexedDB, for state too big for web storage
//! and for Web Workers (which have no web storage).
//!
//! One database per area ([`KV_DATABASE`] by default), apart from the
//! vaults' databases so its schema moves on its own. Layout (version 1):
//! the object store `entries`, out-of-line keys `[namespace, key]` and the
//! value text as the value. A namespace is the key range from
//! `[namespace]` to `[namespace, []]` (an array sorts after every string),
//! so listing, sizing and clearing one never reads another. Every write is
//! one readwrite transaction; the namespace's size, when it is guarded, is
//! read inside it.

use super::{from_store_error, kv_error};
use crate::idb::{self, wait, DomError};
use async_trait::async_trait;
use chatvault_store::kv::{check_key, check_namespace, entry_bytes};
use chatvault_store::{KvError, KvLimits, KvResult, KvStore, KvUsage};
use futures::future::LocalBoxFuture;
use js_sys::Array;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, IdbDatabase, IdbKeyRange, IdbObjectStore, IdbTransaction};

/// The database of the default area.
pub const KV_DATABASE: &str = "chatvault-kv";
const ENTRIES: &str = "entries";
const VERSION: u32 = 1;

fn upgrade(
    db: &IdbDatabase,
    _tx: &IdbTransaction,
    old: u32,
) -> LocalBoxFuture<'static, Result<(), JsValue>> {
    let created = if old < 1 {
        db.create_object_store(ENTRIES).map(|_| ())
    } else {
        Ok(())
    };
    Box::pin(std::future::ready(created))
}

struct Connection {
    db: IdbDatabase,
    _on_version_change: Closure<dyn FnMut(Event)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.db.set_onversionchange(None);
        self.db.close();
    }
}

/// An IndexedDB database holding key-value namespaces; clones share one
/// connection, which closes when the last of them (and of its namespaces)
/// is dropped.
#[derive(Clone)]
pub struct IndexedDbKvArea {
    connection: Rc<Connection>,
    name: String,
}

impl std::fmt::Debug for IndexedDbKvArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedDbKvArea")
            .field("name", &self.name)
            .finish()
    }
}

impl IndexedDbKvArea {
    /// Opens (creating as needed) the area in database `name`
    /// ([`KV_DATABASE`] unless an app keeps several).
    pub async fn open(name: &str) -> KvResult<IndexedDbKvArea> {
        let (db, on_version_change) = idb::open_database(name, VERSION, upgrade)
            .await
            .map_err(from_store_error)?;
        Ok(IndexedDbKvArea {
            connection: Rc::new(Connection {
                db,
                _on_version_change: on_version_change,
            }),
            name: name.to_owned(),
        })
    }

    /// Namespace `namespace` of this area, guarded by `limits`
    /// ([`KvLimits::indexed_db`] is the default to use).
    pub fn namespace(&self, namespace: &str, limits: KvLimits) -> KvResult<IndexedDbKv> {
        check_namespace(namespace)?;
        Ok(IndexedDbKv {
            area: self.clone(),
            namespace: namespace.to_owned(),
            limits,
        })
    }

    /// Deletes the area's database and every namespace in it; waits until
    /// every connection to it has closed.
    pub async fn delete(name: &str) -> KvResult<()> {
        crate::IndexedDbStore::delete(name)
            .await
            .map_err(from_store_error)
    }
}

/// One namespace of an [`IndexedDbKvArea`].
#[derive(Debug, Clone)]
pub struct IndexedDbKv {
    area: IndexedDbKvArea,
    namespace: String,
    limits: KvLimits,
}

impl IndexedDbKv {
    fn db(&self) -> &IdbDatabase {
        &self.area.connection.db
    }

    fn key(&self, key: &str) -> JsValue {
        Array::of2(&JsValue::from_str(&self.namespace), &JsValue::from_str(key)).into()
    }

    /// Every key of this namespace and nothing else.
    fn range(&self) -> KvResult<IdbKeyRange> {
        let ns = JsValue::from_str(&self.namespace);
        let lower: JsValue = Array::of1(&ns).into();
        let upper: JsValue = Array::of2(&ns, &Array::new()).into();
        IdbKeyRange::bound(&lower, &upper).map_err(|e| fail("listing", &e))
    }

    fn readonly(&self) -> KvResult<IdbObjectStore> {
        let tx = idb::readonly(self.db(), &[ENTRIES]).map_err(|e| kv_error("reading", &e))?;
        tx.object_store(ENTRIES).map_err(|e| fail("reading", &e))
    }

    /// This namespace's `(key, value)` pairs, sorted by key, read through
    /// `store` (inside whatever transaction it belongs to).
    async fn entries_in(&self, store: &IdbObjectStore) -> KvResult<Vec<(String, String)>> {
        let range = self.range()?;
        let keys = store
            .get_all_keys_with_key(&range)
            .map_err(|e| fail("listing", &e))?;
        let keys: Array = wait(&keys)
            .await
            .map_err(|e| kv_error("listing", &e))?
            .unchecked_into();
        let values = store
            .get_all_with_key(&range)
            .map_err(|e| fail("listing", &e))?;
        let values: Array = wait(&values)
            .await
            .map_err(|e| kv_error("listing", &e))?
            .unchecked_into();
        keys.iter()
            .zip(values.iter())
            .map(|(key, value)| {
                let key = Array::from(&key).get(1).as_string();
                match (key, value.as_string()) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(KvError::Backend {
                        detail: format!(
                            "the key-value database {} holds an entry that is not text",
                            self.area.name
                        ),
                    }),
                }
            })
            .collect()
    }

    /// Runs one readwrite transaction: `write` issues its requests on the
    /// object store, then the transaction commits (or nothing is kept).
    async fn write<F, Fut>(&self, doing: &str, write: F) -> KvResult<()>
    where
        F: FnOnce(IdbObjectStore) -> Fut,
        Fut: std::future::Future<Output = KvResult<()>>,
    {
        let tx =
            idb::readwrite(self.db(), &[ENTRIES], "strict").map_err(|e| kv_error(doing, &e))?;
        let store = tx.object_store(ENTRIES).map_err(|e| fail(doing, &e))?;
        if let Err(e) = write(store).await {
            let _ = tx.abort();
            return Err(e);
        }
        idb::finish(&tx).await.map_err(|e| kv_error(doing, &e))
    }
}

fn fail(doing: &str, e: &JsValue) -> KvError {
    kv_error(doing, &DomError::from_js(e))
}

#[async_trait(?Send)]
impl KvStore for IndexedDbKv {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn get(&self, key: &str) -> KvResult<Option<String>> {
        check_key(key)?;
        let request = self
            .readonly()?
            .get(&self.key(key))
            .map_err(|e| fail("reading", &e))?;
        let value = wait(&request).await.map_err(|e| kv_error("reading", &e))?;
        if value.is_undefined() {
            return Ok(None);
        }
        value.as_string().map(Some).ok_or_else(|| KvError::Backend {
            detail: format!("the stored value of \"{key}\" is not text"),
        })
    }

    async fn set(&self, key: &str, value: &str) -> KvResult<()> {
        check_key(key)?;
        // The one-value limit needs no read: refuse before opening anything.
        self.limits.check(key, value, 0, 0)?;
        let slot = self.key(key);
        self.write("writing", |store| async move {
            if self.limits.max_total_bytes.is_some() {
                let entries = self.entries_in(&store).await?;
                let entries = entries.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                self.limits.check_among(key, value, entries)?;
            }
            let put = store
                .put_with_key(&JsValue::from_str(value), &slot)
                .map_err(|e| fail("writing", &e))?;
            wait(&put).await.map_err(|e| kv_error("writing", &e))?;
            Ok(())
        })
        .await
    }

    async fn remove(&self, key: &str) -> KvResult<()> {
        check_key(key)?;
        let slot = self.key(key);
        self.write("removing", |store| async move {
            let delete = store.delete(&slot).map_err(|e| fail("removing", &e))?;
            wait(&delete).await.map_err(|e| kv_error("removing", &e))?;
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        let store = self.readonly()?;
        let range = self.range()?;
        let request = store
            .get_all_keys_with_key(&range)
            .map_err(|e| fail("listing", &e))?;
        let keys: Array = wait(&request)
            .await
            .map_err(|e| kv_error("listing", &e))?
            .unchecked_into();
        // IndexedDB orders keys by UTF-16 code units, Rust by code points:
        // sort here so every backend lists in the same order.
        let mut keys: Vec<String> = keys
            .iter()
            .filter_map(|k| Array::from(&k).get(1).as_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn clear(&self) -> KvResult<()> {
        let range = self.range()?;
        self.write("clearing", |store| async move {
            let delete = store.delete(&range).map_err(|e| fail("clearing", &e))?;
            wait(&delete).await.map_err(|e| kv_error("clearing", &e))?;
            Ok(())
        })
        .await
    }

    async fn usage(&self) -> KvResult<KvUsage> {
        let entries = self.entries_in(&self.readonly()?).await?;
        Ok(KvUsage {
            entries: entries.len() as u64,
            bytes: entries.iter().map(|(k, v)| entry_bytes(k, v)).sum(),
        })
    }
}
