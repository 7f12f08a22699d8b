//! The SQLite store behind the `Store` trait: integrity in the store (unique names,
//! references), optimistic concurrency under many concurrent writers, a busy database
//! (bounded retry, no partial row), migrations and the master-key check, and sealed
//! values bound to their row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use csm_agent::manager::model;
use csm_agent::manager::store::crypto::MasterKey;
use csm_agent::manager::store::sqlite::{SqliteStore, DB_FILE};
use csm_agent::manager::store::{new_id, now_ms, ObjectKind, Row, Store, StoreError};

fn row(kind: ObjectKind, name: &str, refs: &[&str]) -> Row {
    let now = now_ms();
    Row {
        kind,
        id: new_id(),
        name: name.into(),
        version: 1,
        body: "{\"n\":0}".into(),
        sealed: None,
        refs: refs.iter().map(|s| s.to_string()).collect(),
        created_ms: now,
        updated_ms: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_lives_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let s = SqliteStore::open(dir.path(), &key).unwrap();
    assert_eq!(s.schema_version().unwrap(), 1);
    let t = row(ObjectKind::Template, "t", &[]);
    s.insert(t.clone()).await.unwrap();
    // Names are unique per kind, not across kinds.
    assert!(matches!(
        s.insert(row(ObjectKind::Template, "t", &[])).await,
        Err(StoreError::NameTaken { .. })
    ));
    s.insert(row(ObjectKind::SecretManager, "t", &[&t.id]))
        .await
        .unwrap();
    // A reference to nothing is refused, and nothing is written.
    let dangling = row(ObjectKind::SecretManager, "d", &["no-such-id"]);
    assert_eq!(
        s.insert(dangling.clone()).await,
        Err(StoreError::MissingRef("no-such-id".into()))
    );
    assert!(s.get(&dangling.id).await.unwrap().is_none());
    // A referenced row cannot be deleted.
    let by = s.referrers(&t.id).await.unwrap();
    assert_eq!(by.len(), 1);
    assert!(matches!(
        s.delete(ObjectKind::Template, &t.id, 1).await,
        Err(StoreError::InUse { .. })
    ));
    // Lists page and count.
    for i in 0..5 {
        s.insert(row(ObjectKind::EncryptedText, &format!("s{i}"), &[]))
            .await
            .unwrap();
    }
    let p = s.list(ObjectKind::EncryptedText, 2, 3).await.unwrap();
    assert_eq!((p.items.len(), p.total), (2, 5));
    assert_eq!(p.items[0].name, "s3");
    // Reopen: same data, migrations not re-run.
    drop(s);
    let s = SqliteStore::open(dir.path(), &key).unwrap();
    assert_eq!(s.get(&t.id).await.unwrap().unwrap().name, "t");
    // Another key is refused at open.
    let e = SqliteStore::open(dir.path(), &MasterKey::generate()).unwrap_err();
    assert!(e.to_string().contains("master key does not match"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(dir.path(), &MasterKey::generate()).unwrap());
    let r = row(ObjectKind::Template, "counter", &[]);
    s.insert(r.clone()).await.unwrap();
    let writers = 64;
    let per = 5;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (s, id) = (s.clone(), r.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut stale = 0;
            for _ in 0..per {
                loop {
                    let mut cur = s.get(&id).await.unwrap().unwrap();
                    let n: u64 = serde_json::from_str::<serde_json::Value>(&cur.body).unwrap()["n"]
                        .as_u64()
                        .unwrap();
                    let v = cur.version;
                    cur.body = format!("{{\"n\":{}}}", n + 1);
                    cur.name = format!("counter-{w}");
                    match s.update(cur, v).await {
                        Ok(()) => break,
                        Err(StoreError::Stale(_)) => stale += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            stale
        }));
    }
    let mut stale = 0;
    for t in tasks {
        stale += t.await.unwrap();
    }
    let fin = s.get(&r.id).await.unwrap().unwrap();
    let n = serde_json::from_str::<serde_json::Value>(&fin.body).unwrap()["n"]
        .as_u64()
        .unwrap();
    assert_eq!(
        n,
        (writers * per) as u64,
        "every increment landed exactly once"
    );
    assert_eq!(fin.version, 1 + (writers * per) as i64);
    eprintln!("{stale} stale writes were refused and retried");
    // Concurrent inserts of one name: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.insert(row(ObjectKind::SecretManager, "same", &[])).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::NameTaken { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_gets_a_bounded_retry_and_no_partial_row() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), &MasterKey::generate()).unwrap();
    // Another process's connection holds the write lock.
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = row(ObjectKind::Template, "blocked", &[]);
    let started = Instant::now();
    let e = s.insert(r.clone()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e, StoreError::Busy);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "bounded: {took:?}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    assert!(
        s.get(&r.id).await.unwrap().is_none(),
        "nothing half-written"
    );
    // Released: the same write succeeds, and the file is intact.
    s.insert(r.clone()).await.unwrap();
    let ok: String = other
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // A lock released while a write waits: the write goes through.
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let w = {
        let s = s.clone();
        tokio::spawn(async move { s.insert(row(ObjectKind::Template, "waited", &[])).await })
    };
    tokio::task::yield_now().await;
    other.execute_batch("COMMIT").unwrap();
    w.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_value_copied_to_another_row_does_not_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let s = SqliteStore::open(dir.path(), &key).unwrap();
    let mut a = row(ObjectKind::EncryptedText, "a", &[]);
    a.sealed = Some(model::seal(&key, &a.id, b"value-of-a"));
    let mut b = row(ObjectKind::EncryptedText, "b", &[]);
    b.sealed = Some(model::seal(&key, &b.id, b"value-of-b"));
    s.insert(a.clone()).await.unwrap();
    s.insert(b.clone()).await.unwrap();
    let got = s.get(&a.id).await.unwrap().unwrap();
    assert_eq!(&model::open(&key, &got).unwrap()[..], b"value-of-a");
    // An attacker with write access to the file copies b's ciphertext into a.
    let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    c.execute(
        "UPDATE objects SET sealed = (SELECT sealed FROM objects WHERE id = ?1) WHERE id = ?2",
        rusqlite::params![b.id, a.id],
    )
    .unwrap();
    let moved = s.get(&a.id).await.unwrap().unwrap();
    assert_eq!(moved.sealed, b.sealed, "the bytes were copied");
    assert!(
        model::open(&key, &moved).is_err(),
        "but they do not decrypt in a's row"
    );
    // Positive control: the plaintext is nowhere in the file.
    let db = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    let wal = std::fs::read(dir.path().join(format!("{DB_FILE}-wal"))).unwrap_or_default();
    for f in [&db, &wal] {
        assert!(!f.windows(10).any(|w| w == b"value-of-a"));
    }
    assert!(
        db.windows(1).count() > 0
            && (db.windows(6).any(|w| w == b"object") || wal.windows(6).any(|w| w == b"object")),
        "the scan reads the schema text"
    );
}
