//! The scale-out backend: Postgres holds the links, Redis (optional) is a shared cache and
//! carries invalidations between instances.
//!
//! Every instance keeps the in-memory index for redirects (the hot path is unchanged); the
//! index is filled on a miss (`Store::resolve_remote`: negative cache, Redis, Postgres).
//! Creates and deletes go to Postgres and return after its commit. Clicks are counted in the
//! index entry as a local delta (since the last flush) and flushed as deltas
//! (`clicks = clicks + n`), so several instances can count clicks for one link.
//! A delete (or a create, which may reuse an expired code) is published on
//! [`CHANNEL`]; every instance drops the code from its index and negative cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use deadpool_postgres::{Manager, Pool, Runtime};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::durable::expiry;
use super::index::{Arena, Entry, NEVER};
use super::{LinkInfo, Lookup, NewLink, Shared, StoreError};
use crate::domain::{ShortCode, code};

/// Redis channel carrying codes to drop from every instance's index.
pub const CHANNEL: &str = "linkr:invalidate";
/// How long a link stays in Redis (at most; less when it expires sooner).
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long an unknown code is remembered as unknown by one instance.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Negative cache size bound (codes); it is emptied of stale codes, or cleared, when full.
const NEGATIVE_MAX: usize = 10_000;
/// Timeout of every readiness check and of connecting.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
const POOL_SIZE: usize = 16;
/// Without Redis (no invalidations), how often the index is checked against Postgres.
pub const REVALIDATE_EVERY: Duration = Duration::from_secs(5);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS links (code text primary key, url text not null, \
     owner text not null, created_at bigint not null, expires_at bigint, \
     clicks bigint not null default 0)";

/// Where the scale-out backends are.
#[derive(Clone)]
pub struct RemoteConfig {
    pub database_url: String,
    pub redis_url: Option<String>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("redis", &self.redis_url.is_some())
            .finish_non_exhaustive()
    }
}

/// A link as cached in Redis.
#[derive(Serialize, Deserialize)]
struct Cached {
    url: String,
    owner: String,
    created_at: i64,
    expires_at: Option<i64>,
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

fn cache_key(code: &str) -> String {
    format!("linkr:link:{code}")
}

pub(crate) struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    /// The invalidation subscription is live.
    subscribed: AtomicBool,
}

pub(crate) struct Remote {
    pool: Pool,
    schema_ready: AtomicBool,
    pub(crate) redis: Option<Redis>,
    arena: Mutex<Arena>,
    negative: Mutex<HashMap<CompactString, Instant>>,
    /// Bumped by every invalidation received: a miss-path fill that raced one is dropped.
    epoch: AtomicU64,
    spare: tokio::sync::Mutex<Vec<Bytes>>,
    pub(crate) stop: CancellationToken,
}

impl Remote {
    /// Builds the pool and the Redis client; connects lazily (an unreachable database makes
    /// the instance unready, not fail to start).
    pub(crate) fn new(cfg: &RemoteConfig) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config = cfg
            .database_url
            .parse()
            .map_err(|e| backend("invalid LINKR_DATABASE_URL", e))?;
        pg.connect_timeout(CHECK_TIMEOUT);
        let pool = Pool::builder(Manager::new(pg, NoTls))
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(CHECK_TIMEOUT * 2))
            .build()
            .map_err(|e| backend("postgres pool", e))?;
        let redis = match &cfg.redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| backend("invalid redis URL", e))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CHECK_TIMEOUT))
                    .set_response_timeout(Some(CHECK_TIMEOUT))
                    .set_number_of_retries(1);
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(|e| backend("redis", e))?;
                Some(Redis {
                    client,
                    conn,
                    subscribed: AtomicBool::new(false),
                })
            }
        };
        Ok(Self {
            pool,
            schema_ready: AtomicBool::new(false),
            redis,
            arena: Mutex::new(Arena::new()),
            negative: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            spare: tokio::sync::Mutex::new(Vec::with_capacity(super::DIRTY_CAPACITY)),
            stop: CancellationToken::new(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pool.get().await.map_err(|e| backend("postgres", e))?;
        if !self.schema_ready.load(Ordering::Acquire) {
            // Concurrent first starts can race on CREATE TABLE IF NOT EXISTS: retry once.
            if client.batch_execute(SCHEMA).await.is_err() {
                client
                    .batch_execute(SCHEMA)
                    .await
                    .map_err(|e| backend("postgres schema", e))?;
            }
            self.schema_ready.store(true, Ordering::Release);
        }
        Ok(client)
    }

    /// Creates the schema now if the database answers (otherwise on first use).
    pub(crate) async fn init(&self) {
        if let Err(e) = self.client().await {
            tracing::warn!(error = %e, "postgres not reachable at start-up; will retry on use");
        }
    }

    pub(crate) async fn check_postgres(&self) -> Result<(), String> {
        let probe = async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| backend("postgres", e))?;
            Ok::<_, StoreError>(())
        };
        match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("postgres did not answer in time".into()),
        }
    }

    /// `None` without Redis.
    pub(crate) async fn check_redis(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        let mut conn = redis.conn.clone();
        let ping = tokio::time::timeout(CHECK_TIMEOUT, conn.ping::<String>()).await;
        Some(match ping {
            Ok(Ok(_)) if redis.subscribed.load(Ordering::Acquire) => Ok(()),
            Ok(Ok(_)) => Err("not subscribed to invalidations yet".into()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis did not answer in time".into()),
        })
    }

    fn negative_hit(&self, code: &str) -> bool {
        let map = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(code).is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
    }

    fn negative_insert(&self, code: &str) {
        let mut map = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= NEGATIVE_MAX {
            map.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
            if map.len() >= NEGATIVE_MAX {
                map.clear();
            }
        }
        map.insert(CompactString::new(code), Instant::now());
    }

    fn negative_remove(&self, code: &str) {
        self.negative
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(code);
    }

    /// Drops `code` from this instance's caches (an invalidation).
    pub(crate) fn invalidate(&self, shared: &Shared, code: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.negative_remove(code);
        shared.index.remove(code.as_bytes());
    }

    /// Inserts a link into the index, keeping the unflushed clicks of an entry it replaces.
    fn fill_index(&self, shared: &Shared, code: &str, link: &Cached) {
        let data = self
            .arena
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .alloc(code.as_bytes(), link.url.as_bytes());
        let owner = shared.owners.intern(&link.owner);
        let entry = Entry::new(
            data,
            code.len(),
            link.created_at,
            link.expires_at.unwrap_or(NEVER),
            owner,
            0,
        );
        if let Some(old) = shared.index.insert(entry) {
            let pending = old.clicks.load(Ordering::SeqCst);
            if pending > 0 {
                shared.index.with(code.as_bytes(), |e| {
                    e.clicks.fetch_add(pending, Ordering::SeqCst);
                    if !e.dirty.swap(true, Ordering::SeqCst) {
                        shared.lock_dirty().push(e.code_bytes());
                    }
                });
            }
        }
    }

    /// Miss path: negative cache, Redis, Postgres; fills the index (and Redis) on a hit.
    /// Returns whether the index now holds `code`.
    pub(crate) async fn load(&self, shared: &Shared, code: &str) -> Result<bool, StoreError> {
        if ShortCode::parse(code).is_err() || self.negative_hit(code) {
            return Ok(false);
        }
        // A fill that raced an invalidation (epoch changed) is not kept; retried a few times.
        for attempt in 0..3 {
            let epoch = self.epoch.load(Ordering::SeqCst);
            match self.load_once(shared, code, attempt == 0, epoch).await? {
                None => return Ok(false),
                Some(()) if self.epoch.load(Ordering::SeqCst) == epoch => return Ok(true),
                Some(()) => {
                    shared.index.remove(code.as_bytes());
                }
            }
        }
        Ok(false)
    }

    async fn load_once(
        &self,
        shared: &Shared,
        code: &str,
        use_cache: bool,
        epoch: u64,
    ) -> Result<Option<()>, StoreError> {
        let mut from_cache = None;
        if let Some(redis) = self.redis.as_ref().filter(|_| use_cache) {
            let mut conn = redis.conn.clone();
            match conn.get::<_, Option<String>>(cache_key(code)).await {
                Ok(Some(json)) => from_cache = serde_json::from_str::<Cached>(&json).ok(),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "redis read failed; asking postgres"),
            }
        }
        let (link, fill_redis) = match from_cache {
            Some(link) => (link, false),
            None => match self.select(code).await? {
                Some((link, _)) => (link, true),
                None => {
                    self.negative_insert(code);
                    return Ok(None);
                }
            },
        };
        self.fill_index(shared, code, &link);
        // Not after an invalidation: the row read may be gone (receivers also DEL the key).
        let fill_redis = fill_redis && self.epoch.load(Ordering::SeqCst) == epoch;
        if fill_redis && let Some(redis) = &self.redis {
            let now = shared.clock.now_unix();
            let ttl = match link.expires_at {
                Some(at) => u64::try_from(at - now)
                    .unwrap_or(0)
                    .min(CACHE_TTL.as_secs()),
                None => CACHE_TTL.as_secs(),
            };
            if ttl > 0
                && let Ok(json) = serde_json::to_string(&link)
            {
                let mut conn = redis.conn.clone();
                if let Err(e) = conn.set_ex::<_, _, ()>(cache_key(code), json, ttl).await {
                    tracing::debug!(error = %e, "redis cache fill failed");
                }
            }
        }
        Ok(Some(()))
    }

    async fn select(&self, code: &str) -> Result<Option<(Cached, u64)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT url, owner, created_at, expires_at, clicks FROM links WHERE code = $1",
                &[&code],
            )
            .await
            .map_err(|e| backend("postgres", e))?;
        Ok(row.map(|r| {
            let clicks: i64 = r.get(4);
            (
                Cached {
                    url: r.get(0),
                    owner: r.get(1),
                    created_at: r.get(2),
                    expires_at: r.get(3),
                },
                u64::try_from(clicks).unwrap_or(0),
            )
        }))
    }

    /// The link with its clicks: Postgres' total plus this instance's unflushed delta.
    pub(crate) async fn info(
        &self,
        shared: &Shared,
        code: &str,
    ) -> Result<Option<LinkInfo>, StoreError> {
        let Ok(parsed) = ShortCode::parse(code) else {
            return Ok(None);
        };
        let Some((link, clicks)) = self.select(code).await? else {
            return Ok(None);
        };
        let pending = shared
            .index
            .with(code.as_bytes(), |e| e.clicks.load(Ordering::SeqCst))
            .unwrap_or(0);
        Ok(Some(LinkInfo {
            code: parsed,
            url: link.url,
            owner: link.owner.into(),
            created_at: link.created_at,
            expires_at: link.expires_at,
            clicks: clicks + pending,
        }))
    }

    pub(crate) async fn create(
        &self,
        shared: &Shared,
        new: NewLink,
    ) -> Result<LinkInfo, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO links (code, url, owner, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (code) DO UPDATE SET url = EXCLUDED.url, owner = EXCLUDED.owner, \
                 created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, clicks = 0 \
                 WHERE links.expires_at IS NOT NULL AND links.expires_at <= $4 \
                 RETURNING code",
            )
            .await
            .map_err(|e| backend("postgres", e))?;
        let now = shared.clock.now_unix();
        let expires_at = Some(expiry(now, new.ttl_seconds)).filter(|&at| at != NEVER);
        let owner: &str = &new.owner;
        let mut attempts = 0;
        let code = loop {
            let code = new.code.clone().unwrap_or_else(code::generate);
            let inserted = client
                .query_opt(
                    &statement,
                    &[&code.as_str(), &new.url.as_str(), &owner, &now, &expires_at],
                )
                .await
                .map_err(|e| backend("postgres", e))?;
            if inserted.is_some() {
                break code;
            }
            attempts += 1;
            if new.code.is_some() {
                return Err(StoreError::CodeTaken);
            }
            if attempts >= 10 {
                return Err(StoreError::Backend("no free generated code".into()));
            }
        };
        drop(client);
        let link = Cached {
            url: new.url.as_str().to_owned(),
            owner: owner.to_owned(),
            created_at: now,
            expires_at,
        };
        self.negative_remove(code.as_str());
        self.fill_index(shared, code.as_str(), &link);
        // A custom code may replace an expired link other instances still hold.
        if new.code.is_some() {
            self.broadcast(code.as_str()).await;
        }
        Ok(LinkInfo {
            code,
            url: new.url.into_string(),
            owner: new.owner,
            created_at: now,
            expires_at,
            clicks: 0,
        })
    }

    pub(crate) async fn delete(&self, shared: &Shared, code: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM links WHERE code = $1", &[&code])
            .await
            .map_err(|e| backend("postgres", e))?;
        drop(client);
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        self.invalidate(shared, code);
        self.broadcast(code).await;
        Ok(())
    }

    /// Removes `code` from Redis and tells every instance to drop it.
    async fn broadcast(&self, code: &str) {
        let Some(redis) = &self.redis else { return };
        let mut conn = redis.conn.clone();
        let sent = async {
            conn.del::<_, ()>(cache_key(code)).await?;
            conn.publish::<_, _, ()>(CHANNEL, code).await
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, code, "invalidation not published; other instances may serve the link until restarted");
        }
    }

    /// Flushes the click deltas counted since the last flush. Returns (links, clicks).
    pub(crate) async fn flush_clicks(&self, shared: &Shared) -> Result<(u64, u64), StoreError> {
        let mut spare = self.spare.lock().await;
        std::mem::swap(&mut *shared.lock_dirty(), &mut *spare);
        if spare.is_empty() {
            return Ok((0, 0));
        }
        let mut codes = Vec::with_capacity(spare.len());
        let mut deltas = Vec::with_capacity(spare.len());
        for code in spare.iter() {
            let delta = shared.index.with(code, |e| {
                e.dirty.store(false, Ordering::SeqCst);
                e.clicks.swap(0, Ordering::SeqCst)
            });
            if let (Some(delta @ 1..), Ok(code)) = (delta, std::str::from_utf8(code)) {
                codes.push(code.to_owned());
                deltas.push(i64::try_from(delta).unwrap_or(i64::MAX));
            }
        }
        let written = async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE links SET clicks = links.clicks + d.n \
                     FROM unnest($1::text[], $2::bigint[]) AS d(code, n) WHERE links.code = d.code",
                    &[&codes, &deltas],
                )
                .await
                .map_err(|e| backend("postgres", e))
        }
        .await;
        let result = match written {
            Ok(_) => Ok((
                codes.len() as u64,
                deltas.iter().map(|&d| d.unsigned_abs()).sum(),
            )),
            Err(e) => {
                // Put the deltas back: the next flush retries them.
                for (code, delta) in codes.iter().zip(&deltas) {
                    shared.index.with(code.as_bytes(), |e| {
                        e.clicks.fetch_add(delta.unsigned_abs(), Ordering::SeqCst);
                        if !e.dirty.swap(true, Ordering::SeqCst) {
                            shared.lock_dirty().push(e.code_bytes());
                        }
                    });
                }
                Err(e)
            }
        };
        spare.clear();
        result
    }

    /// Deletes expired links from Postgres and from the index. Returns how many left the index.
    pub(crate) async fn purge_expired(&self, shared: &Shared) -> Result<u64, StoreError> {
        let now = shared.clock.now_unix();
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM links WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(|e| backend("postgres", e))?;
        drop(client);
        let mut expired = Vec::new();
        shared.index.for_each(|e| {
            if e.is_expired(now) {
                expired.push(e.code_bytes());
            }
        });
        let mut purged = 0;
        for code in &expired {
            if shared
                .index
                .remove_unless(code, |e| !e.is_expired(now))
                .is_some()
            {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Drops every link from the index (after a gap in the invalidation stream).
    fn drop_all(&self, shared: &Shared) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut codes = Vec::new();
        shared.index.for_each(|e| codes.push(e.code_bytes()));
        for code in codes {
            shared.index.remove(&code);
        }
    }

    /// Without Redis: every [`REVALIDATE_EVERY`], drops the links Postgres no longer has
    /// (deleted through another instance) from the index.
    async fn revalidate_loop(&self, shared: &Shared) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(REVALIDATE_EVERY) => {}
            }
            if let Err(e) = self.revalidate(shared).await {
                tracing::warn!(error = %e, "revalidation of the index failed");
            }
        }
    }

    async fn revalidate(&self, shared: &Shared) -> Result<(), StoreError> {
        let mut codes = Vec::new();
        shared
            .index
            .for_each(|e| codes.push(e.code_str().to_owned()));
        for chunk in codes.chunks(1000) {
            let client = self.client().await?;
            let rows = client
                .query("SELECT code FROM links WHERE code = ANY($1)", &[&chunk])
                .await
                .map_err(|e| backend("postgres", e))?;
            drop(client);
            let live: std::collections::HashSet<String> =
                rows.iter().map(|r| r.get::<_, String>(0)).collect();
            for code in chunk.iter().filter(|c| !live.contains(*c)) {
                self.invalidate(shared, code);
            }
        }
        Ok(())
    }

    /// Receives invalidations until stopped, resubscribing after a failure (and then dropping
    /// the whole index, since messages may have been missed).
    pub(crate) async fn subscribe(self: std::sync::Arc<Self>, shared: std::sync::Arc<Shared>) {
        use futures_util::StreamExt;
        let Some(redis) = &self.redis else {
            return self.revalidate_loop(&shared).await;
        };
        let mut had_gap = false;
        loop {
            let connected = async {
                let mut pubsub = redis.client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                () = self.stop.cancelled() => return,
                c = tokio::time::timeout(CHECK_TIMEOUT * 2, connected) => c,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    if had_gap {
                        if let Err(e) = self.flush_clicks(&shared).await {
                            tracing::warn!(error = %e, "click flush before resync failed");
                        }
                        self.drop_all(&shared);
                        tracing::info!("resubscribed to invalidations; local index dropped");
                    }
                    redis.subscribed.store(true, Ordering::Release);
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            () = self.stop.cancelled() => return,
                            msg = messages.next() => match msg {
                                Some(msg) => {
                                    if let Ok(code) = std::str::from_utf8(msg.get_payload_bytes()) {
                                        self.invalidate(&shared, code);
                                        // Undoes a cache fill of ours that raced the delete.
                                        let mut conn = redis.conn.clone();
                                        let _ = conn.del::<_, ()>(cache_key(code)).await;
                                    }
                                }
                                None => break,
                            },
                        }
                    }
                    redis.subscribed.store(false, Ordering::Release);
                    tracing::warn!("invalidation subscription lost; reconnecting");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to invalidations"),
                Err(_) => tracing::warn!("subscribing to invalidations timed out"),
            }
            had_gap = true;
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Used by `Store::resolve_remote`: looks `code` up remotely, then resolves it locally.
pub(crate) async fn resolve(
    remote: &Remote,
    store: &super::Store,
    code: &str,
) -> Result<Lookup, StoreError> {
    if remote.load(&store.0.shared, code).await? {
        Ok(store.resolve(code))
    } else {
        Ok(Lookup::Missing)
    }
}
