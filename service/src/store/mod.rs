//! The embedded durable store: redb on disk, an in-memory index for reads.
//!
//! - Reads (`resolve`, `info`) are answered from the [`index`] only: no disk, no allocation
//!   on `resolve`, a shard read lock held for a hash lookup.
//! - Writes (`create`, `delete`) are queued to one writer thread that commits every queued
//!   write in one durable transaction (group commit) before answering; the index is updated
//!   after the commit, so a link is visible only once it survives `kill -9`.
//! - Clicks are counted in memory; the links clicked since the last flush are on a dirty
//!   list and their totals are written by `flush_clicks` (every `click_flush_interval` from
//!   `spawn_maintenance`, and on `close`).

mod durable;
mod index;
mod postgres;

pub use self::postgres::RemoteConfig;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use redb::Database;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

use self::durable::{Op, Owners, Writer};
use self::index::{Index, NEVER};
use crate::clock::Clock;
use crate::domain::code::MAX_CODE_LEN;
use crate::domain::{ShortCode, TargetUrl};

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "linkr.redb";
/// Initial capacity of the dirty list and its spare (they only grow past it).
pub(crate) const DIRTY_CAPACITY: usize = 1024;
/// Operations that may wait for the writer before `create`/`delete` callers wait to enqueue.
const QUEUE: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// How often clicks are written; at most one second (longer values are treated as 1 s).
    pub click_flush_interval: Duration,
    /// How often expired links are deleted.
    pub purge_interval: Duration,
}

impl StoreConfig {
    /// Flush clicks every second, purge expired links every minute.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            click_flush_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(60),
        }
    }
}

/// Result of a redirect lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The `Location` value: the normalised URL, printable ASCII (a valid header value).
    Found(Bytes),
    /// Known but past its expiry (not yet purged).
    Expired,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub code: ShortCode,
    pub url: String,
    pub owner: Arc<str>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub clicks: u64,
}

#[derive(Debug, Clone)]
pub struct NewLink {
    pub url: TargetUrl,
    /// A custom code; `None` generates a fresh random one.
    pub code: Option<ShortCode>,
    pub owner: Arc<str>,
    pub ttl_seconds: Option<u64>,
}

/// Who deletes a link: an admin key (any link) or a key that may delete its own links only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleter {
    Admin,
    Owner(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the code is already taken by another link")]
    CodeTaken,
    #[error("no link has this code")]
    NotFound,
    #[error("the link belongs to another key")]
    NotOwner,
    #[error("the store is closed")]
    Closed,
    /// The scale-out backend did not answer (down, restarting, or slower than its timeouts).
    #[error("the database is not available: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Backend(String),
}

/// Counters since open, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Links in the index now.
    pub links: u64,
    pub creates: u64,
    pub deletes: u64,
    /// Durable write transactions committed (creates/deletes, click flushes, purges).
    pub commits: u64,
    /// Clicks made durable (sum of the increase of every written total).
    pub clicks_flushed: u64,
    /// Click flushes that wrote something.
    pub click_flushes: u64,
    pub flush_errors: u64,
    pub purged: u64,
}

#[derive(Default)]
struct Counters {
    creates: AtomicU64,
    deletes: AtomicU64,
    commits: AtomicU64,
    clicks_flushed: AtomicU64,
    click_flushes: AtomicU64,
    flush_errors: AtomicU64,
    purged: AtomicU64,
}

/// State shared by the handles and the writer thread.
struct Shared {
    index: Index,
    owners: Owners,
    /// Codes clicked since the last flush (each once, guarded by `Entry::dirty`).
    dirty: Mutex<Vec<Bytes>>,
    clock: Clock,
    counters: Counters,
    /// Bumped after every click flush that had links to write (tests wait on it).
    flushed: watch::Sender<u64>,
}

impl Shared {
    fn lock_dirty(&self) -> MutexGuard<'_, Vec<Bytes>> {
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct WriterHandle {
    thread: std::thread::JoinHandle<()>,
    exited: oneshot::Receiver<()>,
}

struct Inner {
    shared: Arc<Shared>,
    cfg: StoreConfig,
    tx: RwLock<Option<mpsc::Sender<Op>>>,
    db: RwLock<Option<Arc<Database>>>,
    writer: Mutex<Option<WriterHandle>>,
    closing: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// The scale-out backend (Postgres, optional Redis); `None` for the embedded store.
    remote: Option<Arc<postgres::Remote>>,
}

/// Handle to the store; clones share it.
#[derive(Clone)]
pub struct Store(Arc<Inner>);

impl Store {
    /// Opens or creates `data_dir/linkr.redb`, loads every link into memory and starts the
    /// writer thread. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(cfg: StoreConfig, clock: Clock) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                cfg.data_dir.display()
            ))
        })?;
        let (db, index, owners) = durable::open_and_load(&cfg.data_dir.join(DB_FILE))?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            index,
            owners,
            dirty: Mutex::new(Vec::with_capacity(DIRTY_CAPACITY)),
            clock,
            counters: Counters::default(),
            flushed: watch::Sender::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (exited_tx, exited) = oneshot::channel();
        let writer = Writer::new(db.clone(), shared.clone(), rx, exited_tx);
        let thread = std::thread::Builder::new()
            .name("linkr-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self(Arc::new(Inner {
            shared,
            cfg,
            tx: RwLock::new(Some(tx)),
            db: RwLock::new(Some(db)),
            writer: Mutex::new(Some(WriterHandle { thread, exited })),
            closing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            remote: None,
        })))
    }

    /// The scale-out store: links in Postgres (`remote.database_url`), Redis as a shared cache
    /// and invalidation channel when `remote.redis_url` is set. The index starts empty and is
    /// filled on misses ([`Store::lookup_remote`]). Connects lazily: an unreachable database
    /// makes [`Store::check_backends`] fail, not the start. Needs a tokio runtime.
    pub async fn open_remote(
        cfg: StoreConfig,
        remote: RemoteConfig,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let remote = Arc::new(postgres::Remote::new(&remote)?);
        remote.init().await;
        let shared = Arc::new(Shared {
            index: Index::with_capacity(0),
            owners: Owners::default(),
            dirty: Mutex::new(Vec::with_capacity(DIRTY_CAPACITY)),
            clock,
            counters: Counters::default(),
            flushed: watch::Sender::new(0),
        });
        tokio::spawn(remote.clone().subscribe(shared.clone()));
        Ok(Self(Arc::new(Inner {
            shared,
            cfg,
            tx: RwLock::new(None),
            db: RwLock::new(None),
            writer: Mutex::new(None),
            closing: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            remote: Some(remote),
        })))
    }

    /// Whether this store is backed by Postgres (misses may be answered by
    /// [`Store::lookup_remote`]).
    pub fn is_remote(&self) -> bool {
        self.0.remote.is_some()
    }

    /// The miss path of the scale-out store, after [`Store::resolve`] (or [`Store::peek`])
    /// answered `Missing`: looks the code up in Redis, then Postgres, fills the index and answers
    /// from it, counting a click when `visit`. `Missing` for the embedded store.
    pub async fn lookup_remote(&self, code: &str, visit: bool) -> Result<Lookup, StoreError> {
        match &self.0.remote {
            Some(remote) => postgres::lookup(remote, self, code, visit).await,
            None => Ok(Lookup::Missing),
        }
    }

    /// The link with its click count, from the backend: [`Store::info`] for the embedded
    /// store; Postgres (its total plus this instance's unflushed clicks) for the scale-out one.
    pub async fn link_info(&self, code: &str) -> Result<Option<LinkInfo>, StoreError> {
        match &self.0.remote {
            Some(remote) => remote.info(&self.0.shared, code).await,
            None => Ok(self.info(code)),
        }
    }

    /// Readiness of the scale-out dependencies: `("postgres", ..)` and, with Redis,
    /// `("redis", ..)`, each bounded by a short timeout. Empty for the embedded store.
    pub async fn check_backends(&self) -> Vec<(&'static str, Result<(), String>)> {
        let Some(remote) = &self.0.remote else {
            return Vec::new();
        };
        let (pg, redis) = tokio::join!(remote.check_postgres(), remote.check_redis());
        let mut checks = vec![("postgres", pg)];
        if let Some(redis) = redis {
            checks.push(("redis", redis));
        }
        checks
    }

    /// [`Store::resolve`] without counting a click (`HEAD`: link-preview bots and monitors ask
    /// whether a link resolves; they are not visitors). Never inlined into the redirect, whose
    /// `GET` path stays as it was.
    #[inline(never)]
    pub fn peek(&self, code: &str) -> Lookup {
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Lookup::Missing;
        }
        let shared = &*self.0.shared;
        shared
            .index
            .with(code.as_bytes(), |e| {
                if e.expires_at != NEVER && e.is_expired(shared.clock.now_unix()) {
                    Lookup::Expired
                } else {
                    Lookup::Found(e.location())
                }
            })
            .unwrap_or(Lookup::Missing)
    }

    /// Whether the scale-out store has reached Postgres since it started, so that its index
    /// may hold links to serve while a backend is away (readiness then reports the instance
    /// degraded rather than not ready). `false` for the embedded store.
    pub fn backends_reached(&self) -> bool {
        self.0
            .remote
            .as_ref()
            .is_some_and(|remote| remote.has_reached_postgres())
    }

    /// The redirect path: the `Location` value of `code`, counting a click.
    /// No disk access and no allocation (the dirty list only grows past its high-water mark).
    pub fn resolve(&self, code: &str) -> Lookup {
        enum Hit {
            Found(Bytes, Option<Bytes>),
            Expired,
        }
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Lookup::Missing;
        }
        let shared = &*self.0.shared;
        let hit = shared.index.with(code.as_bytes(), |e| {
            if e.expires_at != NEVER && e.is_expired(shared.clock.now_unix()) {
                return Hit::Expired;
            }
            // SeqCst pairs with the flush, which clears `dirty` before reading `clicks`.
            e.clicks.fetch_add(1, Ordering::SeqCst);
            let newly_dirty =
                !e.dirty.load(Ordering::SeqCst) && !e.dirty.swap(true, Ordering::SeqCst);
            Hit::Found(e.location(), newly_dirty.then(|| e.code_bytes()))
        });
        match hit {
            None => Lookup::Missing,
            Some(Hit::Expired) => Lookup::Expired,
            Some(Hit::Found(location, dirty)) => {
                if let Some(code) = dirty {
                    shared.lock_dirty().push(code);
                }
                Lookup::Found(location)
            }
        }
    }

    /// The link with its click count (including clicks not yet flushed). Expired links are
    /// returned until they are purged; compare `expires_at` with the clock.
    pub fn info(&self, code: &str) -> Option<LinkInfo> {
        let shared = &*self.0.shared;
        let (code, url, owner, created_at, expires_at, clicks) =
            shared.index.with(code.as_bytes(), |e| {
                (
                    ShortCode::from_trusted(e.code_str()),
                    e.url_str().to_owned(),
                    e.owner,
                    e.created_at,
                    e.expires_at(),
                    e.clicks.load(Ordering::Relaxed),
                )
            })?;
        Some(LinkInfo {
            code,
            url,
            owner: shared.owners.name(owner),
            created_at,
            expires_at,
            clicks,
        })
    }

    /// Creates a link; returns once it is committed to disk (fsync'd). A generated code never
    /// collides with a stored one; a custom code held by a live link is `CodeTaken` (the code
    /// of an expired, not yet purged link is reused).
    #[cfg_attr(
        feature = "otel",
        tracing::instrument(name = "store.create", level = "info", skip_all)
    )]
    pub async fn create(&self, new: NewLink) -> Result<LinkInfo, StoreError> {
        if let Some(remote) = &self.0.remote {
            if self.0.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            let created = remote.create(&self.0.shared, new).await?;
            self.0
                .shared
                .counters
                .creates
                .fetch_add(1, Ordering::Relaxed);
            self.0
                .shared
                .counters
                .commits
                .fetch_add(1, Ordering::Relaxed);
            return Ok(created);
        }
        self.call(|reply| Op::Create { link: new, reply }).await
    }

    /// Deletes a link durably, whoever owns it; `NotFound` if there is none with this code.
    pub async fn delete(&self, code: &str) -> Result<(), StoreError> {
        self.delete_as(code, Deleter::Admin).await
    }

    /// Deletes a link durably if `by` may: the owner check and the delete are one step, so a
    /// link another key re-created under the same code in between is never removed.
    /// `NotFound` if there is no link with this code, `NotOwner` if it is someone else's.
    #[cfg_attr(
        feature = "otel",
        tracing::instrument(name = "store.delete", level = "info", skip_all)
    )]
    pub async fn delete_as(&self, code: &str, by: Deleter) -> Result<(), StoreError> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if ShortCode::parse(code).is_err() {
            return Err(StoreError::NotFound);
        }
        if let Some(remote) = &self.0.remote {
            remote.delete(&self.0.shared, code, &by).await?;
            self.0
                .shared
                .counters
                .deletes
                .fetch_add(1, Ordering::Relaxed);
            self.0
                .shared
                .counters
                .commits
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let code = CompactString::new(code);
        self.call(|reply| Op::Delete { code, by, reply }).await
    }

    /// Writes the click totals of every link clicked since the last flush, in one durable
    /// transaction. Returns how many links were written.
    // Debug level: the maintenance task flushes every second, which at info would export a
    // one-span trace per second.
    #[cfg_attr(
        feature = "otel",
        tracing::instrument(name = "store.flush_clicks", level = "debug", skip_all)
    )]
    pub async fn flush_clicks(&self) -> Result<u64, StoreError> {
        if let Some(remote) = &self.0.remote {
            let shared = &*self.0.shared;
            let result = remote.flush_clicks(shared).await;
            let c = &shared.counters;
            match &result {
                Ok((0, _)) => {}
                Ok((_, clicks)) => {
                    c.commits.fetch_add(1, Ordering::Relaxed);
                    c.click_flushes.fetch_add(1, Ordering::Relaxed);
                    c.clicks_flushed.fetch_add(*clicks, Ordering::Relaxed);
                }
                Err(_) => {
                    c.flush_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            shared.flushed.send_modify(|n| *n += 1);
            return result.map(|(links, _)| links);
        }
        self.call(|reply| Op::FlushClicks { reply }).await
    }

    /// Deletes expired links from disk, then from memory. Returns how many were removed.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        if let Some(remote) = &self.0.remote {
            let purged = remote.purge_expired(&self.0.shared).await?;
            let c = &self.0.shared.counters;
            c.purged.fetch_add(purged, Ordering::Relaxed);
            return Ok(purged);
        }
        self.call(|reply| Op::Purge { reply }).await
    }

    /// Readiness: the store is open, its writer thread runs and the database answers a read.
    /// For the scale-out store only whether it is open: see [`Store::check_backends`].
    pub fn check(&self) -> Result<(), StoreError> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if self.0.remote.is_some() {
            return Ok(());
        }
        let writer_alive = self
            .0
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|w| !w.thread.is_finished());
        if !writer_alive {
            return Err(StoreError::Backend("the writer thread has stopped".into()));
        }
        let db = self
            .0
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)?;
        durable::check_readable(&db)
    }

    /// Runs in the background until `stop` is cancelled: flushes clicks every
    /// `click_flush_interval` (at most 1 s), purges expired links every `purge_interval`,
    /// and flushes once more when stopped. Needs a tokio runtime.
    pub fn spawn_maintenance(&self, stop: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        let min = Duration::from_millis(10);
        let flush_every = self
            .0
            .cfg
            .click_flush_interval
            .clamp(min, Duration::from_secs(1));
        let purge_every = self.0.cfg.purge_interval.max(min);
        tokio::spawn(async move {
            let start = Instant::now();
            let mut flush = interval_at(start + flush_every, flush_every);
            flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut purge = interval_at(start + purge_every, purge_every);
            purge.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    _ = flush.tick() => match store.flush_clicks().await {
                        Ok(_) => {}
                        Err(StoreError::Closed) => return,
                        Err(e) => tracing::warn!(error = %e, "click flush failed"),
                    },
                    _ = purge.tick() => match store.purge_expired().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(purged = n, "expired links purged"),
                        Err(StoreError::Closed) => return,
                        Err(e) => tracing::warn!(error = %e, "purge of expired links failed"),
                    },
                }
            }
            match store.flush_clicks().await {
                Ok(_) | Err(StoreError::Closed) => {}
                Err(e) => tracing::warn!(error = %e, "final click flush failed"),
            }
        })
    }

    /// Flushes clicks, stops the writer and closes the database. Idempotent; every later
    /// write answers `Closed` (reads keep answering from memory).
    pub async fn close(&self) -> Result<(), StoreError> {
        let _closing = self.0.closing.lock().await;
        if self.0.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(remote) = &self.0.remote {
            let flushed = remote.flush_clicks(&self.0.shared).await.map(|_| ());
            remote.stop.cancel();
            return flushed;
        }
        let tx = self
            .0
            .tx
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let writer = self
            .0
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut result = Err(StoreError::Backend("the writer thread had stopped".into()));
        if let Some(tx) = tx {
            let (reply, done) = oneshot::channel();
            if tx.send(Op::Shutdown { reply }).await.is_ok() {
                drop(tx);
                if let Ok(flushed) = done.await {
                    result = flushed;
                }
            }
        }
        if let Some(writer) = writer {
            // The writer drops its database handle before signalling.
            let _ = writer.exited.await;
        }
        self.0
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        result
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.0.shared.counters;
        StoreStats {
            links: self.len() as u64,
            creates: c.creates.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            clicks_flushed: c.clicks_flushed.load(Ordering::Relaxed),
            click_flushes: c.click_flushes.load(Ordering::Relaxed),
            flush_errors: c.flush_errors.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
        }
    }

    /// Links in memory (including expired ones not yet purged).
    pub fn len(&self) -> usize {
        self.0.shared.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clock(&self) -> &Clock {
        &self.0.shared.clock
    }

    /// Sends one operation to the writer thread and waits for its answer.
    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let tx = self
            .0
            .tx
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(op(reply)).await.map_err(|_| StoreError::Closed)?;
        drop(tx);
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Completes once the number of click flush attempts reaches `n`.
    #[cfg(test)]
    async fn flushed_at_least(&self, n: u64) {
        let mut rx = self.0.shared.flushed.subscribe();
        let _ = rx.wait_for(|&done| done >= n).await;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.0.cfg.data_dir)
            .field("links", &self.len())
            .field("closed", &self.0.closed.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests;
