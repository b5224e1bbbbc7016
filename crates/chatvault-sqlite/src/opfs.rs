//! The store in a browser (feature `opfs`, wasm32 only): SQLite on the
//! Origin Private File System through the `opfs-sahpool` VFS of
//! `sqlite-wasm-vfs`.
//!
//! What this module owns is everything the browser does differently from a
//! file system; the schema, queries and migrations are the native ones.
//!
//! - **Where it runs.** OPFS sync access handles exist only in a dedicated
//!   Web Worker; anywhere else [`install`] fails with
//!   [`StoreError::Unsupported`] saying so, before anything is touched.
//! - **The pool.** The VFS keeps every database of the origin in one OPFS
//!   directory ([`POOL_DIRECTORY`]) of pre-opened files, and holds their
//!   access handles for as long as the worker lives. Handles are exclusive
//!   per origin: a second worker (another tab) cannot install the pool and
//!   gets [`StoreError::Busy`]. Tabs therefore need one leader that owns
//!   the store; that is the caller's job, not this crate's.
//! - **One connection per database.** The VFS does not lock between
//!   connections of one worker and the store runs WAL with
//!   `locking_mode=EXCLUSIVE` (the WAL index lives on the connection's
//!   heap), so a second connection would read stale pages and could
//!   corrupt the file. [`Lease`] refuses a second open of a name while
//!   the first store (any clone of it) is alive.
//! - **Sizes.** A database's size is `page_count × page_size`; the space
//!   left is the origin's quota less its usage
//!   (`navigator.storage.estimate()`).
//! - **Backups before migrations** are `VACUUM INTO` copies named
//!   `NAME.v{N}.bak` in the same pool, as natively.

use crate::convert::sql_err;
use chatvault_store::{Result, StoreError};
use rsqlite_vfs::VfsFilesManager;
use rusqlite::{Connection, OpenFlags};
use sqlite_wasm_vfs::sahpool::{OpfsSAHError, OpfsSAHPoolCfgBuilder, OpfsSAHPoolUtil};
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;
use wasm_bindgen::JsCast;

/// The SQLite VFS name the pool registers under.
const VFS_NAME: &str = "chatvault-opfs";

/// The OPFS directory (from the origin's root) holding the pool's files.
pub(crate) const POOL_DIRECTORY: &str = ".chatvault-sqlite";

/// Files the pool keeps open to start with. Each database needs two while
/// open (the database and its WAL); `VACUUM` and statement journals use
/// memory (`temp_store=MEMORY`).
const INITIAL_CAPACITY: usize = 8;

/// Free slots [`reserve_room`] keeps before a database opens: its file
/// and WAL, a migration backup and that backup's journal.
const ROOM_PER_DATABASE: usize = 4;

thread_local! {
    /// The installed pool of this worker.
    static POOL: RefCell<Option<OpfsSAHPoolUtil>> = const { RefCell::new(None) };
    /// Names of the databases a live store of this worker has open.
    static OPEN: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Installs the pool in this worker, once; later calls return at once.
/// Fails with [`StoreError::Unsupported`] outside a dedicated worker or
/// without OPFS, and with [`StoreError::Busy`] when another worker of the
/// origin (another tab) holds the pool's files.
pub(crate) async fn install() -> Result<()> {
    if POOL.with(|p| p.borrow().is_some()) {
        return Ok(());
    }
    if js_sys::global()
        .dyn_into::<web_sys::DedicatedWorkerGlobalScope>()
        .is_err()
    {
        return Err(StoreError::Unsupported(
            "SQLite on OPFS runs only in a dedicated Web Worker (OPFS sync access handles \
             do not exist on a page's main thread or in shared and service workers); \
             open the store from a worker, or use the IndexedDB store"
                .into(),
        ));
    }
    let config = OpfsSAHPoolCfgBuilder::new()
        .vfs_name(VFS_NAME)
        .directory(POOL_DIRECTORY)
        .initial_capacity(INITIAL_CAPACITY)
        .build();
    let pool = sqlite_wasm_vfs::sahpool::install::<sqlite_wasm_rs::WasmOsCallback>(&config, false)
        .await
        .map_err(pool_error)?;
    tracing::debug!(
        directory = POOL_DIRECTORY,
        capacity = pool.capacity(),
        "installed the OPFS pool"
    );
    POOL.with(|p| *p.borrow_mut() = Some(pool));
    Ok(())
}

/// The store's error for a failure of the pool.
fn pool_error(e: OpfsSAHError) -> StoreError {
    match &e {
        OpfsSAHError::NotSupported => StoreError::Unsupported(format!(
            "SQLite on OPFS is not available here: {e}; use the IndexedDB store"
        )),
        OpfsSAHError::Opfs { message, .. } if message.starts_with("NoModificationAllowedError") => {
            StoreError::Busy {
                source: Box::new(Owner(e)),
            }
        }
        _ => StoreError::unavailable("the OPFS file pool", e),
    }
}

/// Another worker of the origin holds the pool's files.
#[derive(Debug)]
struct Owner(OpfsSAHError);

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another tab or worker of this site has the SQLite store open (OPFS allows one \
             owner); let that tab own the store, or close it ({})",
            self.0
        )
    }
}

impl std::error::Error for Owner {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Runs `f` with the installed pool.
fn with_pool<T>(f: impl FnOnce(&OpfsSAHPoolUtil) -> Result<T>) -> Result<T> {
    POOL.with(|p| match p.borrow().as_ref() {
        Some(pool) => f(pool),
        None => Err(not_installed()),
    })
}

fn not_installed() -> StoreError {
    StoreError::Backend {
        detail: "the OPFS pool is not installed in this worker".into(),
        source: None,
    }
}

/// The database's name in the pool.
fn name(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| StoreError::InvalidRequest(format!("{} is not UTF-8", path.display())))
}

/// Opens the connection to the database `path` names in the pool.
pub(crate) fn connect(path: &Path, create: bool) -> Result<Connection> {
    let name = name(path)?;
    let exists = with_pool(|pool| {
        pool.contains(name)
            .map_err(|e| StoreError::unavailable("the OPFS file pool", e))
    })?;
    if !exists && !create {
        return Err(StoreError::Unavailable {
            detail: format!("no store named {name} in this origin's OPFS"),
            source: None,
        });
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags_and_vfs(name, flags, VFS_NAME)
        .map_err(|e| StoreError::unavailable(name.to_owned(), e))?;
    // Before the first read: SQLite opens a database left in WAL mode on
    // a VFS without shared memory (this one) only in exclusive locking
    // mode, and switches a new one to WAL only in it. The lock is then
    // held until the connection closes.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(sql_err)?;
    Ok(conn)
}

/// Makes room in the pool for one more database: its file, its WAL, and a
/// migration backup with its journal. Slots are OPFS files held open for
/// the worker's lifetime, so the pool grows on demand rather than being
/// made large up front.
pub(crate) async fn reserve_room() -> Result<()> {
    let pool = POOL.with(|p| p.borrow().clone());
    let Some(pool) = pool else {
        return Err(not_installed());
    };
    let used = pool
        .len()
        .map_err(|e| StoreError::unavailable("the OPFS file pool", e))?;
    pool.ensure_capacity(used + ROOM_PER_DATABASE)
        .await
        .map_err(pool_error)
}

/// Removes the file `path` names from the pool; a missing file is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    let name = name(path)?;
    with_pool(|pool| {
        pool.remove(name)
            .map(|_| ())
            .map_err(|e| StoreError::unavailable(name.to_owned(), e))
    })
}

/// Deletes the database `name` and its WAL and journal from the pool
/// (backups stay). Fails while a store has it open.
pub(crate) async fn delete(name: &str) -> Result<()> {
    install().await?;
    if OPEN.with(|o| o.borrow().contains(name)) {
        return Err(StoreError::InvalidRequest(format!(
            "{name} is open; drop every handle to its store before deleting it"
        )));
    }
    for suffix in ["", "-wal", "-journal"] {
        remove(Path::new(&format!("{name}{suffix}")))?;
    }
    Ok(())
}

/// Bytes the database occupies: its pages (the WAL's newest pages
/// included, as SQLite counts them).
pub(crate) fn database_bytes(conn: &Connection) -> Result<u64> {
    let pragma = |name: &str| -> Result<u64> {
        conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(sql_err)
    };
    Ok(pragma("page_count")? * pragma("page_size")?)
}

/// What the browser says of the origin's storage.
#[derive(Debug, Default)]
pub(crate) struct Origin {
    /// The origin's quota less its usage (`navigator.storage.estimate()`);
    /// `None` where the browser does not say.
    pub(crate) available_bytes: Option<u64>,
    /// Whether the origin's storage is exempt from eviction
    /// (`navigator.storage.persisted()`); OPFS is evicted with the rest of
    /// the origin's data otherwise.
    pub(crate) persisted: bool,
}

/// Asks the browser about the origin's storage (never fails: what it
/// cannot learn stays unknown).
pub(crate) async fn origin() -> Origin {
    let Ok(scope) = js_sys::global().dyn_into::<web_sys::WorkerGlobalScope>() else {
        return Origin::default();
    };
    let storage = scope.navigator().storage();
    let settle = |what: &'static str, promise: std::result::Result<js_sys::Promise, _>| async move {
        let promise: js_sys::Promise = promise.ok()?;
        wasm_bindgen_futures::JsFuture::from(promise)
            .await
            .map_err(|e| tracing::debug!(error = ?e, "cannot read the origin's {what}"))
            .ok()
    };
    let available_bytes = settle("storage estimate", storage.estimate())
        .await
        .and_then(|v| {
            let estimate: web_sys::StorageEstimate = v.unchecked_into();
            let quota = estimate.get_quota()?;
            let usage = estimate.get_usage().unwrap_or(0.0);
            Some((quota - usage).max(0.0) as u64)
        });
    let persisted = settle("persistence", storage.persisted())
        .await
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Origin {
        available_bytes,
        persisted,
    }
}

/// Holds a database name as open in this worker until dropped.
#[derive(Debug)]
pub(crate) struct Lease(String);

impl Lease {
    /// Takes `path`'s name, or fails if a live store already has it.
    pub(crate) fn take(path: &Path) -> Result<Self> {
        let name = name(path)?.to_owned();
        OPEN.with(|o| {
            if o.borrow_mut().insert(name.clone()) {
                Ok(Self(name))
            } else {
                Err(StoreError::Unavailable {
                    detail: format!(
                        "{name} is already open in this worker; share that store (clone it) \
                         instead of opening it twice: a second connection would not see the \
                         first one's writes"
                    ),
                    source: None,
                })
            }
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        OPEN.with(|o| o.borrow_mut().remove(&self.0));
    }
}
