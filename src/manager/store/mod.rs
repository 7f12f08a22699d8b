//! The control plane's persistent state behind one narrow, backend-neutral interface.
//!
//! [`Store`] holds three kinds of object (templates, secret managers, secrets) as
//! [`Row`]s, a dependency edge list between them, and the audit trail. The contract is
//! deliberately small and portable, so that the PostgreSQL backend for several replicas
//! (a later issue) implements the same trait:
//!
//! - **Ids are ours.** Callers generate ids ([`new_id`]); no backend auto-increment leaks
//!   into the contract. Audit events are ordered by `(at_ms, id)`, and [`audit_id`] makes
//!   ids that sort by time.
//! - **Optimistic concurrency.** Every row has a `version`; [`Store::update`] and
//!   [`Store::delete`] take the version the caller read and fail with
//!   [`StoreError::Stale`] if another writer got there first. Both are one transaction
//!   each in SQL that both engines run unchanged (`UPDATE … WHERE id = ? AND version = ?`).
//! - **Integrity in the store.** Unique names per kind, "every referenced object exists" on
//!   write, and "nothing references it" on delete are checked inside the write's
//!   transaction, so two concurrent requests cannot both pass a check and then break it.
//! - **No plaintext secrets.** The store never sees a secret: [`Row::sealed`] is already
//!   AES-256-GCM ciphertext bound to its cell ([`crypto`]); `body` is non-secret JSON.
//!
//! [`sqlite::SqliteStore`] is the embedded backend: rusqlite with the bundled SQLite, on
//! blocking threads, WAL, versioned migrations, and a bounded retry when the database is
//! busy.

pub mod crypto;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// A boxed future, so that the trait is object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The table that holds objects, as named in sealed cells' associated data.
pub const OBJECTS_TABLE: &str = "objects";

/// The column of [`Row::sealed`], as named in sealed cells' associated data.
pub const SEALED_COLUMN: &str = "sealed";

/// What an object is. Names are unique within a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A shell-script template.
    Template,
    /// A custom secrets manager.
    SecretManager,
    /// An encrypted text (built-in value or parameters for a manager).
    EncryptedText,
    /// An SSH credential (a connector).
    SshCredential,
}

impl ObjectKind {
    /// The stable name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Template => "template",
            ObjectKind::SecretManager => "secret_manager",
            ObjectKind::EncryptedText => "encrypted_text",
            ObjectKind::SshCredential => "ssh_credential",
        }
    }

    /// The kind for a stored name.
    pub fn parse(s: &str) -> Option<ObjectKind> {
        Some(match s {
            "template" => ObjectKind::Template,
            "secret_manager" => ObjectKind::SecretManager,
            "encrypted_text" => ObjectKind::EncryptedText,
            "ssh_credential" => ObjectKind::SshCredential,
            _ => return None,
        })
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored object.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// What it is.
    pub kind: ObjectKind,
    /// Its id (ours, see [`new_id`]).
    pub id: String,
    /// Its name, unique within the kind.
    pub name: String,
    /// Bumped by every update; the optimistic-concurrency token.
    pub version: i64,
    /// Non-secret attributes, as JSON.
    pub body: String,
    /// Secret attributes, sealed for the cell (`objects`, id, `sealed`).
    pub sealed: Option<Vec<u8>>,
    /// Ids of the objects this one depends on (a manager's template and connector, a
    /// secret's manager, a credential's key secrets). They must exist when it is written,
    /// and they cannot be deleted while it does.
    pub refs: Vec<String>,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: i64,
    /// Last update time, milliseconds since the epoch.
    pub updated_ms: i64,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("sealed", &self.sealed.as_ref().map(|s| s.len()))
            .field("refs", &self.refs)
            .finish_non_exhaustive()
    }
}

/// One audit event. It holds ids, kinds and timings, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sorts by time ([`audit_id`]).
    pub id: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
    /// The API key's id (a digest prefix, never the key).
    pub key_id: String,
    /// The GraphQL operation (`createSecretManager`, `resolveSecret`, …).
    pub operation: String,
    /// The objects involved.
    pub object_ids: Vec<String>,
    /// The agent that ran the script, if one did.
    pub agent: Option<String>,
    /// `ok`, or an error kind.
    pub outcome: String,
    /// How long the operation took.
    pub duration_ms: i64,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many there are in all.
    pub total: u64,
}

/// Why a store operation failed. Messages name ids and kinds, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another object of the kind has the name.
    #[error("an object of kind {kind} named {name:?} already exists")]
    NameTaken {
        /// The kind.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// An id given already exists.
    #[error("an object with id {0} already exists")]
    IdTaken(String),
    /// No such object.
    #[error("no object with id {0}")]
    NotFound(String),
    /// The object changed since it was read.
    #[error("object {0} was changed by another request; read it again and retry")]
    Stale(String),
    /// A referenced object does not exist.
    #[error("object {0}, which this one refers to, does not exist")]
    MissingRef(String),
    /// Other objects refer to it.
    #[error("object {id} is in use by {}", .by.join(", "))]
    InUse {
        /// The object.
        id: String,
        /// Who refers to it.
        by: Vec<String>,
    },
    /// The database stayed busy through every retry.
    #[error("the database is busy; try again")]
    Busy,
    /// The database failed.
    #[error("storage: {0}")]
    Backend(String),
}

/// The control plane's storage. Every method is one transaction.
pub trait Store: Send + Sync + 'static {
    /// Insert a new row with `version` 1 (the row's own version is ignored).
    fn insert(&self, row: Row) -> StoreFuture<'_, ()>;
    /// Replace a row if its stored version is `expected_version`; the stored version
    /// becomes `expected_version + 1`. Refs are replaced too.
    fn update(&self, row: Row, expected_version: i64) -> StoreFuture<'_, ()>;
    /// Delete a row if its version is `expected_version` and nothing refers to it.
    fn delete(&self, kind: ObjectKind, id: &str, expected_version: i64) -> StoreFuture<'_, ()>;
    /// One row by id, of any kind.
    fn get(&self, id: &str) -> StoreFuture<'_, Option<Row>>;
    /// One row by kind and name.
    fn get_by_name(&self, kind: ObjectKind, name: &str) -> StoreFuture<'_, Option<Row>>;
    /// Rows of a kind, oldest first.
    fn list(&self, kind: ObjectKind, limit: u32, offset: u64) -> StoreFuture<'_, Page<Row>>;
    /// Ids of rows that refer to `id`.
    fn referrers(&self, id: &str) -> StoreFuture<'_, Vec<String>>;
    /// Append an audit event.
    fn append_audit(&self, event: AuditRecord) -> StoreFuture<'_, ()>;
    /// Audit events, newest first.
    fn list_audit(&self, limit: u32, offset: u64) -> StoreFuture<'_, Page<AuditRecord>>;
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new object id: 16 random bytes as 22 characters of URL-safe base64, the shape of
/// Harness's ids.
pub fn new_id() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    crypto::fill_random(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A new audit id that sorts by time, then by a per-process counter.
pub fn audit_id(at_ms: i64) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut r = [0u8; 4];
    crypto::fill_random(&mut r);
    format!(
        "{:012x}{:08x}{:08x}",
        at_ms.max(0),
        SEQ.fetch_add(1, Ordering::Relaxed),
        u32::from_be_bytes(r)
    )
}
