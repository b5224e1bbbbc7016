//! The SQLite store on OPFS in a browser (feature `opfs`; wasm-bindgen-test
//! in a dedicated worker of headless Chromium): the Store conformance suite
//! (`sqlite_opfs::store::<case>`), the Vault conformance suite plain and
//! encrypted (`sqlite_opfs::vault::{plaintext,encrypted}::<case>`), and the
//! rules the browser adds (`rules::<case>`: one store per database,
//! deletion, sizes, the backup before a migration). One binary for all of them:
//! each browser test binary costs a link and a browser start in CI.
//!
//! Every test has its own databases (unique names), deleted after.

#![cfg(target_family = "wasm")]

use chatvault_sqlite::{SqliteOptions, SqliteStore};
use chatvault_store::{Result, Store, StoreError};
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Weak};

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

thread_local! {
    static NEXT: Cell<u32> = const { Cell::new(0) };
}

/// A database name no other test (or earlier run) uses.
fn unique_name(what: &str) -> String {
    let n = NEXT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let nonce = (js_sys::Math::random() * 1e9) as u64;
    format!("chatvault-test-{what}-{n}-{nonce}.db")
}

/// One database of a test. `open` hands back the live store while one is
/// alive — on OPFS a database has one store per worker, which the suites'
/// "two writers of one store" cases share, as two tabs would share their
/// leader's — and reopens the file once every handle is gone.
struct Database {
    name: String,
    max_bytes: Option<u64>,
    live: RefCell<Option<Weak<dyn Store>>>,
}

impl Database {
    fn new(what: &str, max_bytes: Option<u64>) -> Self {
        Self {
            name: unique_name(what),
            max_bytes,
            live: RefCell::new(None),
        }
    }

    async fn open(&self) -> Result<Arc<dyn Store>> {
        if let Some(store) = self.live.borrow().as_ref().and_then(Weak::upgrade) {
            return Ok(store);
        }
        let options = SqliteOptions {
            max_bytes: self.max_bytes,
            ..SqliteOptions::default()
        };
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&self.name, options).await?);
        *self.live.borrow_mut() = Some(Arc::downgrade(&store));
        Ok(store)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = SqliteStore::delete(&name).await {
                tracing::warn!(name, error = %e, "could not delete a test database");
            }
        });
    }
}

/// One test's databases: the main one and the separate capped one.
struct Opfs {
    main: Database,
    capped: RefCell<Option<Database>>,
}

impl Opfs {
    fn new() -> Self {
        Self {
            main: Database::new("main", None),
            capped: RefCell::new(None),
        }
    }

    async fn capped(&self, bytes: u64) -> Result<Arc<dyn Store>> {
        let fresh = Database::new("capped", Some(bytes));
        let store = fresh.open().await?;
        *self.capped.borrow_mut() = Some(fresh);
        Ok(store)
    }
}

impl chatvault_store::testing::StoreBackend for Opfs {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        self.main.open().await
    }

    async fn open_with_quota(&self, bytes: u64) -> Result<Arc<dyn Store>> {
        self.capped(bytes).await
    }
}

impl chatvault::testing::TestBackend for Opfs {
    async fn open(&self) -> Arc<dyn Store> {
        self.main
            .open()
            .await
            .expect("open the SQLite store on OPFS")
    }

    async fn open_with_quota(&self, bytes: u64) -> Arc<dyn Store> {
        self.capped(bytes)
            .await
            .expect("open the capped SQLite store on OPFS")
    }
}

async fn backend() -> Opfs {
    Opfs::new()
}

mod sqlite_opfs {
    mod store {
        chatvault_store::store_conformance_tests!(
            #[wasm_bindgen_test::wasm_bindgen_test],
            crate::backend
        );
    }
    mod vault {
        chatvault::vault_conformance_tests!(
            #[wasm_bindgen_test::wasm_bindgen_test],
            crate::backend
        );
    }
}

/// The rules OPFS adds to the store's contract.
mod rules {
    use super::*;
    use chatvault_core::{Body, ConversationId, ConversationRecord, Hlc, Timestamp, UserId};
    use chatvault_store::{WriteBatch, WriteOp};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn conversation(n: u8) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::from_bytes([n; 16]),
            user_id: UserId::local(),
            created_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_700_000_000_000),
            version: Hlc::new(1_700_000_000_000, 0, chatvault_core::DeviceId(1))
                .expect("a valid stamp"),
            body: Body(vec![n; 16]),
        }
    }

    /// A second connection would not see the first one's WAL (it lives on
    /// the first connection's heap): the second open is refused, and the
    /// name is free again once every handle of the first store is gone.
    #[wasm_bindgen_test]
    async fn a_second_open_of_an_open_database_fails_clearly() {
        let db = Database::new("twice", None);
        let first = SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .expect("first open");
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutConversation(conversation(1)));
        first.write(batch).await.expect("write");

        let err = SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .expect_err("a second open while the first store lives");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("already open"), "{err}");

        // A clone is the same store, so it keeps the name taken.
        let clone = first.clone();
        drop(first);
        assert!(SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .is_err());
        drop(clone);

        let again = SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .expect("reopen after every handle is gone");
        let id = ConversationId::from_bytes([1; 16]);
        assert!(
            again.conversation(id).await.expect("read").is_some(),
            "the first store's write is there"
        );
    }

    /// A deleted database is gone (opening it without `create` fails), and
    /// an open one cannot be deleted from under its store.
    #[wasm_bindgen_test]
    async fn delete_removes_a_closed_database_and_refuses_an_open_one() {
        let db = Database::new("delete", None);
        let store = SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .expect("open");
        let err = SqliteStore::delete(&db.name)
            .await
            .expect_err("delete while open");
        assert!(err.to_string().contains("is open"), "{err}");
        drop(store);

        SqliteStore::delete(&db.name).await.expect("delete");
        let options = SqliteOptions {
            create: false,
            ..SqliteOptions::default()
        };
        let err = SqliteStore::open(&db.name, options)
            .await
            .expect_err("open a deleted database without create");
        assert!(err.to_string().contains("no store named"), "{err}");
    }

    /// The store's pool as the crate installs it (these must match
    /// `src/opfs.rs`): the test reaches it to put an old store in place.
    async fn pool() -> sqlite_wasm_vfs::sahpool::OpfsSAHPoolUtil {
        let config = sqlite_wasm_vfs::sahpool::OpfsSAHPoolCfgBuilder::new()
            .vfs_name("chatvault-opfs")
            .directory(".chatvault-sqlite")
            .build();
        sqlite_wasm_vfs::sahpool::install::<sqlite_wasm_rs::WasmOsCallback>(&config, false)
            .await
            .expect("the store's pool")
    }

    /// A store of schema 1 (the native fixture, imported into the pool) is
    /// copied to `NAME.v1.bak` in the same pool before it is migrated, and
    /// keeps everything, as natively (tests/migrations.rs).
    #[wasm_bindgen_test]
    async fn an_old_store_is_backed_up_in_the_pool_then_migrated() {
        use rsqlite_vfs::transfer::DbTransfer;
        use rsqlite_vfs::VfsFilesManager;

        let db = Database::new("v1", None);
        let backup = format!("{}.v1.bak", db.name);
        let pool = pool().await;
        pool.import_db(&db.name, include_bytes!("fixtures/v1.db"))
            .expect("import the schema-1 fixture");

        let options = SqliteOptions {
            create: false,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&db.name, options)
            .await
            .expect("open and migrate");
        let usage = store.usage().await.expect("usage");
        assert_eq!(
            (
                usage.conversations,
                usage.messages,
                usage.tombstones,
                usage.pending_changes
            ),
            (3, 5, 2, 1)
        );

        assert!(
            pool.contains(&backup).expect("the pool answers"),
            "backup written"
        );
        {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
            let conn =
                rusqlite::Connection::open_with_flags_and_vfs(&backup, flags, "chatvault-opfs")
                    .expect("open the backup");
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
                .expect("exclusive, as the VFS has no shared memory");
            let version: u32 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("read the backup's version");
            assert_eq!(version, 1, "the backup is the store before migrating");
        }
        pool.remove(&backup).expect("remove the backup");
    }

    /// A new database on OPFS gets 16 KiB pages (every WAL frame is two
    /// calls out to the sync access handle, so fewer, bigger frames); one
    /// made before keeps its own (the schema-1 fixture above opens with
    /// its 4 KiB pages).
    #[wasm_bindgen_test]
    async fn a_new_database_gets_big_pages() {
        let db = Database::new("pages", None);
        let store = SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .expect("open");
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutConversation(conversation(1)));
        store.write(batch).await.expect("write");
        drop(store);
        let _pool = pool().await;
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = rusqlite::Connection::open_with_flags_and_vfs(&db.name, flags, "chatvault-opfs")
            .expect("open the database");
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .expect("exclusive, as the VFS has no shared memory");
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .expect("read the page size");
        assert_eq!(page_size, 16 * 1024);
    }

    /// The footprint speaks of OPFS: the database's pages as its size, and
    /// the origin's quota less its usage as the space left (persistence is
    /// whatever the browser granted the origin).
    #[wasm_bindgen_test]
    async fn the_footprint_reports_pages_and_the_origins_space() {
        let db = Database::new("footprint", None);
        let store = SqliteStore::open(&db.name, SqliteOptions::default())
            .await
            .expect("open");
        let f = store.footprint().await.expect("footprint").expect("some");
        assert!(f.used_bytes > 0, "{f:?}");
        assert_eq!(f.used_bytes, store.file_size());
        assert!(f.available_bytes.is_some_and(|b| b > 0), "{f:?}");
    }
}
