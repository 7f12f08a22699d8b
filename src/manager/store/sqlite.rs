//! The embedded backend: SQLite through rusqlite (bundled, so no system library), in
//! `DATA_DIR/control-plane.db`.
//!
//! - **Threads.** rusqlite is blocking; every call runs on tokio's blocking pool. One
//!   writer connection (SQLite has one writer at a time anyway) and a few reader
//!   connections; in WAL mode readers never wait for the writer.
//! - **Durability.** WAL with `synchronous=NORMAL`: a committed write survives a crash of
//!   the process; a power cut may lose the last commits but never corrupts the file.
//! - **Busy.** Another process holding the write lock (a second control plane on the
//!   same directory, a backup tool) makes SQLite wait up to `busy_timeout`; past that the
//!   whole transaction is retried a bounded number of times and then fails as
//!   [`StoreError::Busy`]. A transaction either commits whole or not at all, so a busy
//!   database never leaves a half-written row.
//! - **Migrations.** Numbered SQL scripts in [`MIGRATIONS`], applied in order, each in its
//!   own transaction, recorded in `schema_migrations`. A database from a newer build is
//!   refused rather than guessed at.
//! - **The master key check.** `meta.key_check` holds a value sealed under the master
//!   key, so starting with the wrong key fails at once with a clear error instead of on
//!   the first secret read.
//! - **No plaintext.** Secret columns arrive sealed; `secure_delete` zeroes freed pages.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::crypto::{Cell, MasterKey};
use super::{AuditRecord, ObjectKind, Page, Row, Store, StoreError, StoreFuture};

/// The database file's name in the data directory.
pub const DB_FILE: &str = "control-plane.db";

/// How many reader connections.
const READERS: usize = 4;

/// How long SQLite itself waits for a lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// How many times a busy transaction is retried.
const BUSY_RETRIES: u32 = 5;

/// The schema, one script per version. Only portable DDL: text, big integers and blobs,
/// primary keys, unique constraints and plain indexes (PostgreSQL gets the same scripts
/// with `BYTEA` for `BLOB`).
pub const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE objects (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        body TEXT NOT NULL,
        sealed BLOB,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        UNIQUE (kind, name)
    );
    CREATE TABLE refs (
        from_id TEXT NOT NULL,
        to_id TEXT NOT NULL,
        PRIMARY KEY (from_id, to_id)
    );
    CREATE INDEX refs_to ON refs (to_id);
    CREATE TABLE audit (
        id TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        operation TEXT NOT NULL,
        object_ids TEXT NOT NULL,
        agent TEXT,
        outcome TEXT NOT NULL,
        duration_ms BIGINT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms, id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
)];

const KEY_CHECK: &[u8] = b"csm-agent master key check";

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    if is_busy(&e) {
        return StoreError::Busy;
    }
    // rusqlite's messages name SQL and constraint names, never bound parameters.
    StoreError::Backend(e.to_string())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves a connection whose transaction rolled back
    // when the guard's statement dropped; keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database in `dir`, migrate it, and check `key`
    /// against it. Blocking: call before serving, or from a blocking thread.
    pub fn open(dir: &Path, key: &MasterKey) -> Result<SqliteStore, StoreError> {
        let path = dir.join(DB_FILE);
        // Create the file ourselves, 0600, so SQLite never makes it world-readable; the
        // WAL and shared-memory files copy its permissions.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let writer = Connection::open(&path).map_err(backend)?;
        configure(&writer).map_err(backend)?;
        migrate(&writer)?;
        check_key(&writer, key)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = Connection::open(&path).map_err(backend)?;
            configure(&c).map_err(backend)?;
            readers.push(Mutex::new(c));
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let c = lock(&self.inner.writer);
        current_version(&c)
    }

    /// Run `f` on a reader connection, on a blocking thread.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let n = inner.readers.len();
                let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
                // Take a free reader if there is one, else wait for the next in turn.
                for i in 0..n {
                    if let Ok(c) = inner.readers[(start + i) % n].try_lock() {
                        return f(&c);
                    }
                }
                let c = lock(&inner.readers[start % n]);
                f(&c)
            })
            .await
            .map_err(|e| StoreError::Backend(format!("store thread: {e}")))?
        })
    }

    /// Run `f` in an immediate (write-locking) transaction on the writer, on a blocking
    /// thread, retrying the whole transaction while the database is busy.
    fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = lock(&inner.writer);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let r = (|| {
                        let tx = c
                            .transaction_with_behavior(TransactionBehavior::Immediate)
                            .map_err(backend)?;
                        let v = f(&tx)?;
                        tx.commit().map_err(backend)?;
                        Ok(v)
                    })();
                    match r {
                        Err(StoreError::Busy) if attempt < BUSY_RETRIES => {
                            tracing::debug!(attempt, "database busy; retrying the transaction");
                            std::thread::sleep(Duration::from_millis(10 * attempt as u64));
                        }
                        other => return other,
                    }
                }
            })
            .await
            .map_err(|e| StoreError::Backend(format!("store thread: {e}")))?
        })
    }
}

fn current_version(c: &Connection) -> Result<i64, StoreError> {
    c.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )
    .map_err(backend)
}

fn migrate(c: &Connection) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_ms BIGINT NOT NULL
        )",
    )
    .map_err(backend)?;
    let have = current_version(c)?;
    let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if have > newest {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {have}, newer than this build's {newest}; use a newer csm-agent"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        let tx = c.unchecked_transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
            params![version, super::now_ms()],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version, "applied a schema migration");
    }
    Ok(())
}

fn check_key(c: &Connection, key: &MasterKey) -> Result<(), StoreError> {
    let cell = Cell {
        table: "meta",
        id: "key_check",
        column: "value",
    };
    let stored: Option<Vec<u8>> = c
        .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(backend)?;
    match stored {
        Some(v) => match key.open(cell, &v) {
            Ok(p) if &p[..] == KEY_CHECK => Ok(()),
            _ => Err(StoreError::Backend(
                "the master key does not match this database (was the key file replaced, or CSM_MASTER_KEY_FILE changed?)".into(),
            )),
        },
        None => {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                params![key.seal(cell, KEY_CHECK)],
            )
            .map_err(backend)?;
            Ok(())
        }
    }
}

const ROW_COLUMNS: &str = "kind, id, name, version, body, sealed, created_ms, updated_ms";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Row)> {
    let kind: String = r.get(0)?;
    Ok((
        kind,
        Row {
            kind: ObjectKind::Template,
            id: r.get(1)?,
            name: r.get(2)?,
            version: r.get(3)?,
            body: r.get(4)?,
            sealed: r.get(5)?,
            refs: Vec::new(),
            created_ms: r.get(6)?,
            updated_ms: r.get(7)?,
        },
    ))
}

fn finish(c: &Connection, (kind, mut row): (String, Row)) -> Result<Row, StoreError> {
    row.kind = ObjectKind::parse(&kind)
        .ok_or_else(|| StoreError::Backend(format!("row {} has an unknown kind", row.id)))?;
    let mut st = c
        .prepare_cached("SELECT to_id FROM refs WHERE from_id = ?1 ORDER BY to_id")
        .map_err(backend)?;
    row.refs = st
        .query_map(params![row.id], |r| r.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    Ok(row)
}

fn get_row(c: &Connection, id: &str) -> Result<Option<Row>, StoreError> {
    let raw = c
        .prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM objects WHERE id = ?1"))
        .map_err(backend)?
        .query_row(params![id], row_from)
        .optional()
        .map_err(backend)?;
    raw.map(|r| finish(c, r)).transpose()
}

/// Names already used by another row of the kind.
fn name_taken(
    c: &Connection,
    kind: ObjectKind,
    name: &str,
    except: &str,
) -> Result<bool, StoreError> {
    c.prepare_cached("SELECT COUNT(*) FROM objects WHERE kind = ?1 AND name = ?2 AND id <> ?3")
        .map_err(backend)?
        .query_row(params![kind.as_str(), name, except], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
        .map_err(backend)
}

fn write_refs(c: &Connection, row: &Row) -> Result<(), StoreError> {
    c.execute("DELETE FROM refs WHERE from_id = ?1", params![row.id])
        .map_err(backend)?;
    let mut refs = row.refs.clone();
    refs.sort();
    refs.dedup();
    for to in &refs {
        let exists: i64 = c
            .prepare_cached("SELECT COUNT(*) FROM objects WHERE id = ?1")
            .map_err(backend)?
            .query_row(params![to], |r| r.get(0))
            .map_err(backend)?;
        if exists == 0 {
            return Err(StoreError::MissingRef(to.clone()));
        }
        c.execute(
            "INSERT INTO refs (from_id, to_id) VALUES (?1, ?2)",
            params![row.id, to],
        )
        .map_err(backend)?;
    }
    Ok(())
}

fn referrers_of(c: &Connection, id: &str) -> Result<Vec<String>, StoreError> {
    let mut st = c
        .prepare_cached("SELECT from_id FROM refs WHERE to_id = ?1 ORDER BY from_id")
        .map_err(backend)?;
    let v = st
        .query_map(params![id], |r| r.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    Ok(v)
}

impl Store for SqliteStore {
    fn insert(&self, row: Row) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            if name_taken(tx, row.kind, &row.name, &row.id)? {
                return Err(StoreError::NameTaken {
                    kind: row.kind,
                    name: row.name.clone(),
                });
            }
            let n = tx
                .execute(
                    "INSERT INTO objects (id, kind, name, version, body, sealed, created_ms, updated_ms)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)
                     ON CONFLICT DO NOTHING",
                    params![
                        row.id,
                        row.kind.as_str(),
                        row.name,
                        row.body,
                        row.sealed,
                        row.created_ms,
                        row.updated_ms
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::IdTaken(row.id.clone()));
            }
            write_refs(tx, &row)
        })
    }

    fn update(&self, row: Row, expected_version: i64) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            if name_taken(tx, row.kind, &row.name, &row.id)? {
                return Err(StoreError::NameTaken {
                    kind: row.kind,
                    name: row.name.clone(),
                });
            }
            let n = tx
                .execute(
                    "UPDATE objects SET name = ?1, version = version + 1, body = ?2, sealed = ?3, updated_ms = ?4
                     WHERE id = ?5 AND kind = ?6 AND version = ?7",
                    params![
                        row.name,
                        row.body,
                        row.sealed,
                        row.updated_ms,
                        row.id,
                        row.kind.as_str(),
                        expected_version
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(match get_row(tx, &row.id)? {
                    Some(r) if r.kind == row.kind => StoreError::Stale(row.id.clone()),
                    _ => StoreError::NotFound(row.id.clone()),
                });
            }
            write_refs(tx, &row)
        })
    }

    fn delete(&self, kind: ObjectKind, id: &str, expected_version: i64) -> StoreFuture<'_, ()> {
        let id = id.to_string();
        self.write(move |tx| {
            let by = referrers_of(tx, &id)?;
            if !by.is_empty() {
                return Err(StoreError::InUse { id: id.clone(), by });
            }
            let n = tx
                .execute(
                    "DELETE FROM objects WHERE id = ?1 AND kind = ?2 AND version = ?3",
                    params![id, kind.as_str(), expected_version],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(match get_row(tx, &id)? {
                    Some(r) if r.kind == kind => StoreError::Stale(id.clone()),
                    _ => StoreError::NotFound(id.clone()),
                });
            }
            tx.execute("DELETE FROM refs WHERE from_id = ?1", params![id])
                .map_err(backend)?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> StoreFuture<'_, Option<Row>> {
        let id = id.to_string();
        self.read(move |c| get_row(c, &id))
    }

    fn get_by_name(&self, kind: ObjectKind, name: &str) -> StoreFuture<'_, Option<Row>> {
        let name = name.to_string();
        self.read(move |c| {
            let raw = c
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM objects WHERE kind = ?1 AND name = ?2"
                ))
                .map_err(backend)?
                .query_row(params![kind.as_str(), name], row_from)
                .optional()
                .map_err(backend)?;
            raw.map(|r| finish(c, r)).transpose()
        })
    }

    fn list(&self, kind: ObjectKind, limit: u32, offset: u64) -> StoreFuture<'_, Page<Row>> {
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM objects WHERE kind = ?1")
                .map_err(backend)?
                .query_row(params![kind.as_str()], |r| r.get(0))
                .map_err(backend)?;
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM objects WHERE kind = ?1
                     ORDER BY created_ms, id LIMIT ?2 OFFSET ?3"
                ))
                .map_err(backend)?;
            let raws: Vec<(String, Row)> = st
                .query_map(
                    params![
                        kind.as_str(),
                        limit as i64,
                        offset.min(i64::MAX as u64) as i64
                    ],
                    row_from,
                )
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            let items = raws
                .into_iter()
                .map(|r| finish(c, r))
                .collect::<Result<_, _>>()?;
            Ok(Page {
                items,
                total: total.max(0) as u64,
            })
        })
    }

    fn referrers(&self, id: &str) -> StoreFuture<'_, Vec<String>> {
        let id = id.to_string();
        self.read(move |c| referrers_of(c, &id))
    }

    fn append_audit(&self, e: AuditRecord) -> StoreFuture<'_, ()> {
        self.write(move |tx| {
            let ids = serde_json::to_string(&e.object_ids)
                .map_err(|err| StoreError::Backend(err.to_string()))?;
            tx.execute(
                "INSERT INTO audit (id, at_ms, key_id, operation, object_ids, agent, outcome, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![e.id, e.at_ms, e.key_id, e.operation, ids, e.agent, e.outcome, e.duration_ms],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn list_audit(&self, limit: u32, offset: u64) -> StoreFuture<'_, Page<AuditRecord>> {
        self.read(move |c| {
            let total: i64 = c
                .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
                .map_err(backend)?;
            let mut st = c
                .prepare_cached(
                    "SELECT id, at_ms, key_id, operation, object_ids, agent, outcome, duration_ms
                     FROM audit ORDER BY at_ms DESC, id DESC LIMIT ?1 OFFSET ?2",
                )
                .map_err(backend)?;
            let items = st
                .query_map(
                    params![limit as i64, offset.min(i64::MAX as u64) as i64],
                    |r| {
                        let ids: String = r.get(4)?;
                        Ok(AuditRecord {
                            id: r.get(0)?,
                            at_ms: r.get(1)?,
                            key_id: r.get(2)?,
                            operation: r.get(3)?,
                            object_ids: serde_json::from_str(&ids).unwrap_or_default(),
                            agent: r.get(5)?,
                            outcome: r.get(6)?,
                            duration_ms: r.get(7)?,
                        })
                    },
                )
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            Ok(Page {
                items,
                total: total.max(0) as u64,
            })
        })
    }
}
