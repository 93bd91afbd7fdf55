//! The durable side: redb tables, the record format, loading the index and the writer thread.
//!
//! All writes go through one writer thread (redb allows one write transaction at a time and
//! its API is blocking). The thread takes every queued operation, applies the creates and
//! deletes in one write transaction and commits it once (one fsync for the whole group,
//! `Durability::Immediate`), then updates the index and answers each caller.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use compact_str::CompactString;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::{mpsc, oneshot};

use super::index::{Index, Link, NEVER, NewEntry};
use super::{Deleter, LinkInfo, NewLink, Shared, StoreError};
use crate::domain::{ShortCode, code};

/// code -> record (see [`encode_record`]).
const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
/// code -> total clicks at the last flush.
const CLICKS: TableDefinition<&str, u64> = TableDefinition::new("clicks");
/// "schema_version" -> [`SCHEMA_VERSION`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// redb's page cache (its default is 1 GiB). The index answers reads, so the cache only
/// serves writes; a small one keeps RSS per link low.
const CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Most operations applied in one write transaction.
const MAX_BATCH: usize = 1024;
/// A click flush writes every link clicked in the last interval (10k links at 90k redirects/s
/// over the load generator's seeds: 6 ms of CPU in one run). On a core it shares with the
/// runtime's worker that is 6 ms without a redirect; it yields the core every this many links.
const FLUSH_YIELD_EVERY: usize = 256;

const HAS_EXPIRY: u8 = 1;

/// Record: `flags u8 | created_at i64 LE | [expires_at i64 LE if flags & 1] |
/// owner_len u16 LE | owner | url`.
fn encode_record(out: &mut Vec<u8>, created_at: i64, expires_at: i64, owner: &str, url: &str) {
    // Owner names are API key names; cap absurd ones at a character boundary.
    let mut owner_len = owner.len().min(usize::from(u16::MAX));
    while !owner.is_char_boundary(owner_len) {
        owner_len -= 1;
    }
    let owner = &owner.as_bytes()[..owner_len];
    out.clear();
    out.push(if expires_at == NEVER { 0 } else { HAS_EXPIRY });
    out.extend_from_slice(&created_at.to_le_bytes());
    if expires_at != NEVER {
        out.extend_from_slice(&expires_at.to_le_bytes());
    }
    out.extend_from_slice(&(owner.len() as u16).to_le_bytes());
    out.extend_from_slice(owner);
    out.extend_from_slice(url.as_bytes());
}

struct Record<'a> {
    created_at: i64,
    expires_at: i64,
    owner: &'a str,
    url: &'a str,
}

fn decode_record(bytes: &[u8]) -> Option<Record<'_>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn i64_le(b: &mut &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(take(b, 8)?.try_into().ok()?))
    }
    let mut b = bytes;
    let flags = take(&mut b, 1)?[0];
    let created_at = i64_le(&mut b)?;
    let expires_at = if flags & HAS_EXPIRY != 0 {
        i64_le(&mut b)?
    } else {
        NEVER
    };
    let owner_len = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?);
    let owner = std::str::from_utf8(take(&mut b, usize::from(owner_len))?).ok()?;
    let url = std::str::from_utf8(b).ok().filter(|u| !u.is_empty())?;
    Some(Record {
        created_at,
        expires_at,
        owner,
        url,
    })
}

fn record_expired(bytes: &[u8], now: i64) -> bool {
    decode_record(bytes).is_some_and(|r| r.expires_at != NEVER && now >= r.expires_at)
}

pub(crate) fn expiry(now: i64, ttl_seconds: Option<u64>) -> i64 {
    ttl_seconds.map_or(NEVER, |ttl| {
        now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
    })
}

/// Owner names, interned: links refer to them by number.
#[derive(Default)]
pub(crate) struct Owners(RwLock<OwnerTable>);

#[derive(Default)]
struct OwnerTable {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl OwnerTable {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 owners");
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }
}

impl Owners {
    pub(crate) fn intern(&self, name: &str) -> u32 {
        let known = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .get(name)
            .copied();
        known.unwrap_or_else(|| {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .intern(name)
        })
    }

    pub(crate) fn name(&self, id: u32) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }
}

macro_rules! backend_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}
backend_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Turns transparent huge pages off (see [`disable_transparent_huge_pages`]), opens the
/// database and loads the index from it, with a cache of `LOAD_CACHE_BYTES` for
/// the load, then reopens it with the writer's cache: the load reads each page once, and
/// the pages it left in the cache (about 7 MiB) would stay there, unused, until evicted by
/// writes.
pub(crate) fn open_and_load(path: &Path) -> Result<(Database, Index, Owners), StoreError> {
    disable_transparent_huge_pages();
    let db = open_db_with_cache(path, LOAD_CACHE_BYTES)?;
    let (index, owners) = load(&db)?;
    drop(db);
    Ok((open_db(path)?, index, owners))
}

/// Turns transparent huge pages off for this process, for the memory it touches from now on.
///
/// The index is dense arrays and 16 KiB chunks, about 100 B per link. mimalloc asks for huge
/// pages on its arenas (`madvise`), and a 2 MiB page is resident as soon as one byte of it is
/// touched, so every partly used one (reserve, gaps between large allocations, freed load
/// buffers) counts whole: at 1M links the process's RSS was 138 B/link with them, 121 without.
/// Pages already faulted in keep their size. Best effort: an error leaves things as they are.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and sets one flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// redb's cache while the index is loaded.
const LOAD_CACHE_BYTES: usize = 256 * 1024;

/// Opens (or creates) the database file and checks or writes the schema version.
pub(crate) fn open_db(path: &Path) -> Result<Database, StoreError> {
    open_db_with_cache(path, CACHE_BYTES)
}

fn open_db_with_cache(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    let txn = db.begin_read()?;
    let version = match txn.open_table(META) {
        Ok(meta) => meta.get(SCHEMA_KEY)?.map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    drop(txn);
    match version {
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(StoreError::Backend(format!(
                "{} has schema version {other}; this linkr reads version {SCHEMA_VERSION}",
                path.display()
            )));
        }
        None => {
            let txn = db.begin_write()?;
            txn.open_table(LINKS)?;
            txn.open_table(CLICKS)?;
            txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
            txn.commit()?;
        }
    }
    Ok(db)
}

/// The database answers a read of the schema version.
pub(crate) fn check_readable(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    match txn.open_table(META)?.get(SCHEMA_KEY)? {
        Some(v) if v.value() == SCHEMA_VERSION => Ok(()),
        _ => Err(StoreError::Backend("the schema version is missing".into())),
    }
}

/// Generated codes are uniform over base62: keys below "V" are about half of them.
const LOAD_SPLIT: &str = "V";

/// Reads every link and its clicks into a new index: two threads each read half of the
/// key space in a read transaction (no writes happen before the writer starts).
pub(crate) fn load(db: &Database) -> Result<(Index, Owners), StoreError> {
    let count = db.begin_read()?.open_table(LINKS)?.len()?;
    let index = Index::with_capacity(usize::try_from(count).unwrap_or(usize::MAX));
    let owners = Owners::default();
    let loaded = std::thread::scope(|s| {
        let low = std::thread::Builder::new()
            .name("linkr-store-load".into())
            .spawn_scoped(s, || load_range(db, &index, &owners, ..LOAD_SPLIT));
        let high = load_range(db, &index, &owners, LOAD_SPLIT..);
        let low = match low {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(StoreError::Backend("the load thread panicked".into()))),
            Err(_) => load_range(db, &index, &owners, ..LOAD_SPLIT),
        };
        Ok::<_, StoreError>(low? + high?)
    })?;
    index.finish_load(loaded);
    let txn = db.begin_read()?;
    for row in txn.open_table(CLICKS)?.iter()? {
        let (code, total) = row?;
        let total = total.value();
        index.with(code.value().as_bytes(), |e| {
            e.clicks.store(total, Ordering::Relaxed);
        });
    }
    Ok((index, owners))
}

fn load_range<'a>(
    db: &Database,
    index: &Index,
    owners: &Owners,
    range: impl std::ops::RangeBounds<&'a str> + 'a,
) -> Result<usize, StoreError> {
    let txn = db.begin_read()?;
    let links = txn.open_table(LINKS)?;
    let mut last_owner: Option<(Arc<str>, u32)> = None;
    let mut loaded = 0;
    for row in links.range(range)? {
        let (code, record) = row?;
        let code = code.value();
        let rec = decode_record(record.value()).ok_or_else(|| {
            StoreError::Backend(format!(
                "corrupt record for code {code:?} in the links table"
            ))
        })?;
        let owner = match &last_owner {
            Some((name, id)) if **name == *rec.owner => *id,
            _ => {
                let id = owners.intern(rec.owner);
                last_owner = Some((owners.name(id), id));
                id
            }
        };
        index.insert_loaded(&NewEntry::new(
            code.as_bytes(),
            rec.url.as_bytes(),
            rec.created_at,
            rec.expires_at,
            owner,
            0,
        ));
        loaded += 1;
    }
    Ok(loaded)
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) enum Op {
    Create {
        link: NewLink,
        reply: Reply<LinkInfo>,
    },
    Delete {
        code: CompactString,
        by: Deleter,
        reply: Reply<()>,
    },
    FlushClicks {
        reply: Reply<u64>,
    },
    Purge {
        reply: Reply<u64>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

enum Outcome {
    Created {
        code: ShortCode,
        created_at: i64,
        expires_at: i64,
    },
    Deleted,
    Rejected(StoreError),
}

pub(crate) struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Op>,
    exited: oneshot::Sender<()>,
    /// The dirty list's spare: swapped in at each flush so neither side reallocates.
    spare: Vec<Bytes>,
    record: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(
        db: Arc<Database>,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Op>,
        exited: oneshot::Sender<()>,
    ) -> Self {
        Self {
            db,
            shared,
            rx,
            exited,
            spare: Vec::with_capacity(super::DIRTY_CAPACITY),
            record: Vec::with_capacity(256),
        }
    }

    pub(crate) fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut mutations = Vec::with_capacity(MAX_BATCH);
        let mut shutdown = None;
        'run: while let Some(op) = self.rx.blocking_recv() {
            batch.push(op);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            for op in batch.drain(..) {
                match op {
                    Op::Create { .. } | Op::Delete { .. } => mutations.push(op),
                    other => {
                        self.apply(&mut mutations);
                        match other {
                            Op::FlushClicks { reply } => {
                                let _ = reply.send(self.flush_clicks());
                            }
                            Op::Purge { reply } => {
                                let _ = reply.send(self.purge_expired());
                            }
                            Op::Shutdown { reply } => {
                                shutdown = Some(reply);
                                break;
                            }
                            Op::Create { .. } | Op::Delete { .. } => unreachable!(),
                        }
                    }
                }
            }
            self.apply(&mut mutations);
            if shutdown.is_some() {
                // Operations queued behind the shutdown are answered `Closed` when dropped.
                batch.clear();
                break 'run;
            }
        }
        let flushed = self.flush_clicks().map(|_| ());
        if let Some(reply) = shutdown {
            let _ = reply.send(flushed);
        } else if let Err(e) = flushed {
            tracing::error!(error = %e, "final click flush failed");
        }
        let Self { db, exited, .. } = self;
        drop(db);
        let _ = exited.send(());
    }

    /// Applies creates and deletes in one transaction, then updates the index and replies.
    fn apply(&mut self, mutations: &mut Vec<Op>) {
        if mutations.is_empty() {
            return;
        }
        let now = self.shared.clock.now_unix();
        match self.write_mutations(mutations, now) {
            Ok(outcomes) => {
                for (op, outcome) in mutations.drain(..).zip(outcomes) {
                    self.finish(op, outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = mutations.len(), "write transaction failed");
                for op in mutations.drain(..) {
                    self.finish(op, Outcome::Rejected(e.clone()));
                }
            }
        }
    }

    fn write_mutations(&mut self, mutations: &[Op], now: i64) -> Result<Vec<Outcome>, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut outcomes = Vec::with_capacity(mutations.len());
        let mut changed = false;
        {
            let mut links = txn.open_table(LINKS)?;
            let mut clicks = txn.open_table(CLICKS)?;
            for op in mutations {
                match op {
                    Op::Create { link, .. } => {
                        let code = match &link.code {
                            Some(code) => {
                                let live = links
                                    .get(code.as_str())?
                                    .is_some_and(|r| !record_expired(r.value(), now));
                                if live {
                                    outcomes.push(Outcome::Rejected(StoreError::CodeTaken));
                                    continue;
                                }
                                code.clone()
                            }
                            None => loop {
                                let code = code::generate();
                                if links.get(code.as_str())?.is_none() {
                                    break code;
                                }
                            },
                        };
                        let expires_at = expiry(now, link.ttl_seconds);
                        encode_record(
                            &mut self.record,
                            now,
                            expires_at,
                            &link.owner,
                            link.url.as_str(),
                        );
                        links.insert(code.as_str(), self.record.as_slice())?;
                        clicks.remove(code.as_str())?;
                        changed = true;
                        outcomes.push(Outcome::Created {
                            code,
                            created_at: now,
                            expires_at,
                        });
                    }
                    Op::Delete { code, by, .. } => {
                        if let Deleter::Owner(owner) = by {
                            let other = links.get(code.as_str())?.is_some_and(|r| {
                                decode_record(r.value()).is_none_or(|r| r.owner != &**owner)
                            });
                            if other {
                                outcomes.push(Outcome::Rejected(StoreError::NotOwner));
                                continue;
                            }
                        }
                        if links.remove(code.as_str())?.is_some() {
                            clicks.remove(code.as_str())?;
                            changed = true;
                            outcomes.push(Outcome::Deleted);
                        } else {
                            outcomes.push(Outcome::Rejected(StoreError::NotFound));
                        }
                    }
                    _ => unreachable!("only creates and deletes are batched"),
                }
            }
        }
        if changed {
            txn.commit()?;
            self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
        } else {
            txn.abort()?;
        }
        Ok(outcomes)
    }

    fn finish(&mut self, op: Op, outcome: Outcome) {
        let shared = &*self.shared;
        match (op, outcome) {
            (
                Op::Create { link, reply },
                Outcome::Created {
                    code,
                    created_at,
                    expires_at,
                },
            ) => {
                let owner_id = shared.owners.intern(&link.owner);
                shared.index.insert(NewEntry::new(
                    code.as_str().as_bytes(),
                    link.url.as_str().as_bytes(),
                    created_at,
                    expires_at,
                    owner_id,
                    0,
                ));
                shared.counters.creates.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(LinkInfo {
                    code,
                    url: link.url.into_string(),
                    owner: link.owner,
                    created_at,
                    expires_at: (expires_at != NEVER).then_some(expires_at),
                    clicks: 0,
                }));
            }
            (Op::Delete { code, reply, .. }, Outcome::Deleted) => {
                shared.index.remove(code.as_bytes());
                shared.counters.deletes.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(()));
            }
            (Op::Create { reply, .. }, Outcome::Rejected(e)) => {
                let _ = reply.send(Err(e));
            }
            (Op::Delete { reply, .. }, Outcome::Rejected(e)) => {
                let _ = reply.send(Err(e));
            }
            _ => unreachable!("outcome does not match its operation"),
        }
    }

    /// Writes the current click totals of every link clicked since the last flush.
    /// Returns how many links were written.
    fn flush_clicks(&mut self) -> Result<u64, StoreError> {
        std::mem::swap(&mut *self.shared.lock_dirty(), &mut self.spare);
        if self.spare.is_empty() {
            return Ok(0);
        }
        let result = self.write_clicks();
        let counters = &self.shared.counters;
        match &result {
            Ok((links, clicks)) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.click_flushes.fetch_add(1, Ordering::Relaxed);
                counters
                    .clicks_flushed
                    .fetch_add(*clicks, Ordering::Relaxed);
                tracing::trace!(links, clicks, "clicks flushed");
            }
            Err(e) => {
                counters.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, links = self.spare.len(), "click flush failed; will retry");
                for code in &self.spare {
                    let requeue = self
                        .shared
                        .index
                        .with(code, |e| !e.dirty.swap(true, Ordering::SeqCst))
                        .unwrap_or(false);
                    if requeue {
                        self.shared.lock_dirty().push(code.clone());
                    }
                }
            }
        }
        self.spare.clear();
        self.shared.flushed.send_modify(|n| *n += 1);
        result.map(|(links, _)| links)
    }

    /// (links written, clicks newly made durable)
    fn write_clicks(&self) -> Result<(u64, u64), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let (mut links, mut clicks) = (0, 0);
        {
            let mut table = txn.open_table(CLICKS)?;
            for (i, code) in self.spare.iter().enumerate() {
                if i > 0 && i % FLUSH_YIELD_EVERY == 0 {
                    std::thread::yield_now();
                }
                // Clear the flag before reading the total: a click racing with this flush
                // either is in the total or marks the link dirty again (both SeqCst).
                let total = self.shared.index.with(code, |e| {
                    e.dirty.store(false, Ordering::SeqCst);
                    e.clicks.load(Ordering::SeqCst)
                });
                let (Some(total), Ok(code)) = (total, std::str::from_utf8(code)) else {
                    continue;
                };
                let before = table.insert(code, total)?.map_or(0, |v| v.value());
                links += 1;
                clicks += total.saturating_sub(before);
            }
        }
        txn.commit()?;
        Ok((links, clicks))
    }

    /// Deletes links whose expiry has passed, from the database and then from the index.
    fn purge_expired(&mut self) -> Result<u64, StoreError> {
        let now = self.shared.clock.now_unix();
        let mut expired = Vec::new();
        self.shared.index.for_each(|e| {
            if e.is_expired(now) {
                expired.push(e.code_bytes());
            }
        });
        if expired.is_empty() {
            return Ok(0);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut links = txn.open_table(LINKS)?;
            let mut clicks = txn.open_table(CLICKS)?;
            for code in &expired {
                let code = std::str::from_utf8(code).unwrap_or_default();
                links.remove(code)?;
                clicks.remove(code)?;
            }
        }
        txn.commit()?;
        let counters = &self.shared.counters;
        counters.commits.fetch_add(1, Ordering::Relaxed);
        let mut purged = 0;
        for code in &expired {
            let keep = |e: &Link<'_>| !e.is_expired(now);
            if self.shared.index.remove_unless(code, keep).is_some() {
                purged += 1;
            }
        }
        counters.purged.fetch_add(purged, Ordering::Relaxed);
        Ok(purged)
    }
}

#[cfg(test)]
pub(crate) fn scan_only_for_tests(db: &Database) -> usize {
    let txn = db.begin_read().unwrap();
    let links = txn.open_table(LINKS).unwrap();
    links
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            k.value().len() + v.value().len()
        })
        .sum()
}

/// A never-expiring record, for test fixtures written straight into the table.
#[cfg(test)]
pub(crate) fn encode_for_tests(out: &mut Vec<u8>, created_at: i64, owner: &str, url: &str) {
    encode_record(out, created_at, NEVER, owner, url);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            1_700_000_000,
            NEVER,
            "alice",
            "https://example.com/",
        );
        assert_eq!(buf.len(), 1 + 8 + 2 + 5 + 20);
        let r = decode_record(&buf).unwrap();
        assert_eq!(
            (r.created_at, r.expires_at, r.owner, r.url),
            (1_700_000_000, NEVER, "alice", "https://example.com/")
        );
        encode_record(&mut buf, 5, 65, "", "http://x/");
        let r = decode_record(&buf).unwrap();
        assert_eq!(
            (r.created_at, r.expires_at, r.owner, r.url),
            (5, 65, "", "http://x/")
        );
        assert!(record_expired(&buf, 65));
        assert!(!record_expired(&buf, 64));
    }

    #[test]
    fn truncated_records_are_rejected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, 65, "bob", "http://x/");
        for len in 0..buf.len() - "http://x/".len() {
            assert!(decode_record(&buf[..len]).is_none(), "len {len}");
        }
    }

    #[test]
    fn huge_owner_names_are_cut_at_a_char_boundary() {
        let mut buf = Vec::new();
        let owner = format!("a{}", "é".repeat(40_000));
        encode_record(&mut buf, 1, NEVER, &owner, "http://x/");
        let r = decode_record(&buf).unwrap();
        assert_eq!(r.owner.len(), 65_535);
        assert!(owner.starts_with(r.owner));
        assert_eq!(r.url, "http://x/");
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expiry(10, None), NEVER);
        assert_eq!(expiry(10, Some(5)), 15);
        assert_eq!(expiry(10, Some(u64::MAX)), NEVER);
    }
}
