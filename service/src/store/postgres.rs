//! The scale-out backend: Postgres holds the links, Redis (optional) is a shared cache and
//! carries invalidations between instances.
//!
//! Every instance keeps the in-memory index for redirects (the hot path is unchanged); the
//! index is filled on a miss (`Store::lookup_remote`: negative cache, Redis, Postgres).
//! Creates and deletes go to Postgres and return after its commit. Clicks are counted in the
//! index entry as a local delta (since the last flush) and flushed as deltas
//! (`clicks = clicks + n`), so several instances can count clicks for one link.
//! A delete (or a create, which may reuse an expired code) is published on
//! [`CHANNEL`]; every instance drops the code from its index and negative cache.
//!
//! Faults are bounded in time: every statement has [`QUERY_TIMEOUT`] (on the server as
//! `statement_timeout`, and on the client, which also covers a database that does not answer
//! at all), taking a pooled connection waits at most [`ACQUIRE_TIMEOUT`], connecting at most
//! [`CONNECT_TIMEOUT`], and a Redis command at most [`REDIS_TIMEOUT`]. A database that does
//! not answer in time is `StoreError::Unavailable` (a JSON 503 with `Retry-After`).
//!
//! Consistency between a cache fill and a delete: every row has a generation `gen` (from the
//! sequence `links_gen`, new on every create and re-create). A delete takes a fresh generation
//! and leaves it in Redis as a tombstone (for [`CACHE_TTL`]); a fill of Redis is one script that
//! writes only a generation newer than the tombstone and than the cached value, so a fill that
//! read the row before the delete can never put it back. In-memory fills that overlap an
//! invalidation of their code are not kept (the request is still answered from the row read).
//! Index entries are revalidated against Postgres every [`REVALIDATE_EVERY`], with or without
//! Redis, so a lost invalidation costs at most that much staleness.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use deadpool_postgres::{Manager, Pool, PoolError, Runtime};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::durable::expiry;
use super::index::{NEVER, NewEntry};
use super::{Deleter, LinkInfo, Lookup, NewLink, Shared, StoreError};
use crate::domain::{ShortCode, code};

/// Redis channel carrying codes to drop from every instance's index.
pub const CHANNEL: &str = "linkr:invalidate";
/// How long a link stays in Redis (at most; less when it expires sooner), and how long a
/// delete's tombstone does.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long an unknown code is remembered as unknown by one instance.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Negative cache size bound (codes); it is emptied of stale codes, or cleared, when full.
const NEGATIVE_MAX: usize = 10_000;
/// Timeout of every readiness check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one statement: the server's `statement_timeout` and the client's own limit.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a pooled Postgres connection when all are busy.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of a TCP connect (to Postgres or Redis); the Postgres handshake gets twice that.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one Redis command of the miss path (the cache is skipped when it is slow).
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the invalidation subscription is pinged (on its own connection).
pub const SUBSCRIPTION_PING_EVERY: Duration = Duration::from_secs(1);
const POOL_SIZE: usize = 16;
/// How often the index is checked against Postgres (links deleted or replaced elsewhere whose
/// invalidation did not arrive are dropped).
pub const REVALIDATE_EVERY: Duration = Duration::from_secs(5);
/// After a statement or a connection timed out, Postgres is not tried for this long (the
/// requests meanwhile get their 503 at once instead of waiting out the timeout again).
pub const BACKOFF_AFTER_TIMEOUT: Duration = Duration::from_secs(1);
/// Invalidation counters, one per hash slot of codes: a fill checks its code's slot only.
const SLOTS: usize = 4096;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS links (code text primary key, url text not null, \
     owner text not null, created_at bigint not null, expires_at bigint, \
     clicks bigint not null default 0); \
     CREATE SEQUENCE IF NOT EXISTS links_gen; \
     ALTER TABLE links ADD COLUMN IF NOT EXISTS gen bigint not null default nextval('links_gen')";

/// Writes a link into the cache unless a newer generation (cached, or a tombstone) is there.
/// KEYS: link, tombstone; ARGV: generation, value, TTL seconds.
const FILL_SCRIPT: &str = r"
local gen = tonumber(ARGV[1])
local tomb = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if tomb > gen then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and tonumber(v.gen) and tonumber(v.gen) >= gen then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Drops a link from the cache and leaves a tombstone: fills of older generations are refused.
/// KEYS: link, tombstone; ARGV: generation, TTL seconds.
const TOMBSTONE_SCRIPT: &str = r"
local cur = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end
redis.call('DEL', KEYS[1])
return 1
";

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
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    url: String,
    owner: String,
    created_at: i64,
    expires_at: Option<i64>,
    /// The row's generation (0 in values written before generations existed).
    #[serde(default, rename = "gen")]
    generation: i64,
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(what.to_string())
}

/// A Postgres error: the database being unreachable, restarting, shutting down or too slow
/// is `Unavailable` (503); anything else (a bad statement, a constraint) is `Backend` (500).
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return unavailable(format!("postgres connection lost: {e}"));
    }
    match e.code() {
        None => unavailable(format!("postgres: {e}")),
        Some(code)
            if code.code().starts_with("08")
                || code.code().starts_with("57")
                || code.code().starts_with("53") =>
        {
            unavailable(format!("postgres: {e}"))
        }
        Some(_) => backend("postgres", e),
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(kind) => unavailable(format!("postgres: no connection ({kind:?})")),
        other => unavailable(format!("postgres pool: {other}")),
    }
}

fn cache_key(code: &str) -> String {
    // The braces are a Redis Cluster hash tag: a link's key and tombstone share a slot.
    format!("linkr:link:{{{code}}}")
}

fn tombstone_key(code: &str) -> String {
    format!("linkr:gone:{{{code}}}")
}

/// Milliseconds since `base`.
fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub(crate) struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    /// The invalidation subscription is live: subscribed, and answering its pings.
    subscribed: AtomicBool,
    /// When the subscription last answered (ms since `Remote::base`).
    alive_at: AtomicU64,
    fill: redis::Script,
    tombstone: redis::Script,
}

pub(crate) struct Remote {
    pool: Pool,
    schema_ready: AtomicBool,
    /// Postgres has answered at least once since start (this instance has served from it).
    reached: AtomicBool,
    /// Until when (ms since `base`) Postgres is not tried, after a timeout; 0: tried.
    backoff_until: AtomicU64,
    pub(crate) redis: Option<Redis>,
    negative: Mutex<HashMap<CompactString, Instant>>,
    /// Bumped when the whole index is dropped: every fill in flight is then not kept.
    epoch: AtomicU64,
    /// Bumped per invalidation, in the slot of its code: a fill that raced one is not kept.
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    base: Instant,
    spare: tokio::sync::Mutex<Vec<Bytes>>,
    /// Unflushed clicks of entries dropped from the index (invalidated), flushed by code.
    orphans: Mutex<HashMap<String, u64>>,
    pub(crate) stop: CancellationToken,
}

/// What the miss path found.
enum Fetched {
    Missing,
    /// The link read; `indexed` when it was kept in the index (it raced no invalidation).
    Found {
        link: Cached,
        indexed: bool,
    },
}

impl Remote {
    /// Builds the pool and the Redis client; connects lazily (an unreachable database makes
    /// the instance unready, not fail to start).
    pub(crate) fn new(cfg: &RemoteConfig) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config = cfg
            .database_url
            .parse()
            .map_err(|e| backend("invalid LINKR_DATABASE_URL", e))?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        // A peer that vanished without a reset (blackholed) is noticed by the kernel.
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        let timeout = format!("-c statement_timeout={}", QUERY_TIMEOUT.as_millis());
        let options = match pg.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {timeout}"),
            _ => timeout,
        };
        pg.options(options);
        let pool = Pool::builder(Manager::new(pg, NoTls))
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT * 2))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| backend("postgres pool", e))?;
        let redis = match &cfg.redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| backend("invalid redis URL", e))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(CHECK_TIMEOUT))
                    .set_number_of_retries(1);
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(|e| backend("redis", e))?;
                Some(Redis {
                    client,
                    conn,
                    subscribed: AtomicBool::new(false),
                    alive_at: AtomicU64::new(0),
                    fill: redis::Script::new(FILL_SCRIPT),
                    tombstone: redis::Script::new(TOMBSTONE_SCRIPT),
                })
            }
        };
        Ok(Self {
            pool,
            schema_ready: AtomicBool::new(false),
            reached: AtomicBool::new(false),
            backoff_until: AtomicU64::new(0),
            redis,
            negative: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            base: Instant::now(),
            spare: tokio::sync::Mutex::new(Vec::with_capacity(super::DIRTY_CAPACITY)),
            orphans: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        })
    }

    /// A pooled connection (the schema created on first use), within [`ACQUIRE_TIMEOUT`] or
    /// the connect timeouts.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                if matches!(e, PoolError::Timeout(_)) {
                    self.back_off();
                }
                return Err(pool_error(e));
            }
        };
        if !self.schema_ready.load(Ordering::Acquire) {
            // Concurrent first starts can race on CREATE ... IF NOT EXISTS: retry once.
            let schema = async {
                if client.batch_execute(SCHEMA).await.is_err() {
                    client.batch_execute(SCHEMA).await.map_err(pg_error)?;
                }
                Ok::<_, StoreError>(())
            };
            match tokio::time::timeout(QUERY_TIMEOUT, schema).await {
                Ok(result) => result?,
                Err(_) => {
                    drop(deadpool_postgres::Object::take(client));
                    return Err(unavailable("postgres: schema creation timed out"));
                }
            }
            self.schema_ready.store(true, Ordering::Release);
            self.reached.store(true, Ordering::Release);
        }
        Ok(client)
    }

    /// Runs `f` on a pooled connection within [`QUERY_TIMEOUT`]. A connection that timed out
    /// is not returned to the pool (it may be stuck on an unresponsive server).
    async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&deadpool_postgres::ClientWrapper) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.with_client_within(QUERY_TIMEOUT, f).await
    }

    async fn with_client_within<T>(
        &self,
        limit: Duration,
        f: impl AsyncFnOnce(&deadpool_postgres::ClientWrapper) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        if millis_since(self.base) < self.backoff_until.load(Ordering::Acquire) {
            return Err(unavailable("postgres timed out just now; not tried"));
        }
        self.probe_within(limit, f).await
    }

    /// [`Remote::with_client_within`] even while backing off (the readiness probe).
    async fn probe_within<T>(
        &self,
        limit: Duration,
        f: impl AsyncFnOnce(&deadpool_postgres::ClientWrapper) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(limit, f(&client)).await;
        match result {
            Ok(result) => {
                if result.is_ok() {
                    self.backoff_until.store(0, Ordering::Release);
                    self.reached.store(true, Ordering::Release);
                }
                result.map_err(pg_error)
            }
            Err(_) => {
                self.back_off();
                drop(deadpool_postgres::Object::take(client));
                Err(unavailable(format!(
                    "postgres did not answer within {limit:?}"
                )))
            }
        }
    }

    /// Stops trying Postgres for [`BACKOFF_AFTER_TIMEOUT`].
    fn back_off(&self) {
        let until = millis_since(self.base) + BACKOFF_AFTER_TIMEOUT.as_millis() as u64;
        self.backoff_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Creates the schema now if the database answers (otherwise on first use).
    pub(crate) async fn init(&self) {
        if let Err(e) = self.client().await {
            tracing::warn!(error = %e, "postgres not reachable at start-up; will retry on use");
        }
    }

    /// Whether Postgres has answered since start: the index may then hold links to serve
    /// while it is away (readiness reports a degraded instance, not an unready one).
    pub(crate) fn has_reached_postgres(&self) -> bool {
        self.reached.load(Ordering::Acquire)
    }

    /// Readiness of Postgres. The error is a sentence without addresses (it is shown in
    /// `/readyz`); the detail is logged.
    pub(crate) async fn check_postgres(&self) -> Result<(), String> {
        let probe = self.probe_within(CHECK_TIMEOUT, async |c| {
            c.simple_query("SELECT 1").await.map(|_| ())
        });
        match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: postgres check failed");
                Err("postgres is not available".into())
            }
            Err(_) => Err("postgres did not answer in time".into()),
        }
    }

    /// Readiness of Redis: the cache connection answers a ping, and the invalidation
    /// subscription is live (its own connection answered a ping recently). `None` without
    /// Redis.
    pub(crate) async fn check_redis(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        let mut conn = redis.conn.clone();
        let ping = tokio::time::timeout(CHECK_TIMEOUT, conn.ping::<String>()).await;
        let quiet_ms =
            millis_since(self.base).saturating_sub(redis.alive_at.load(Ordering::Acquire));
        let stale = Duration::from_millis(quiet_ms) > SUBSCRIPTION_PING_EVERY + CHECK_TIMEOUT * 2;
        Some(match ping {
            Ok(Ok(_)) if redis.subscribed.load(Ordering::Acquire) && !stale => Ok(()),
            Ok(Ok(_)) => Err("redis answers but the invalidation subscription is down".into()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: redis check failed");
                Err("redis is not available".into())
            }
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

    fn slot(&self, code: &str) -> &AtomicU64 {
        let hash = self.hasher.hash_one(code.as_bytes());
        &self.slots[(hash as usize) % SLOTS]
    }

    /// The invalidation state a fill of `code` must still see when it is done to be kept.
    fn mark(&self, code: &str) -> (u64, u64) {
        (
            self.epoch.load(Ordering::SeqCst),
            self.slot(code).load(Ordering::SeqCst),
        )
    }

    /// Drops `code` from this instance's caches (an invalidation).
    pub(crate) fn invalidate(&self, shared: &Shared, code: &str) {
        self.slot(code).fetch_add(1, Ordering::SeqCst);
        self.negative_remove(code);
        self.remove_entry(shared, code.as_bytes());
    }

    /// Removes `code` from the index, keeping its unflushed clicks for the next flush.
    fn remove_entry(&self, shared: &Shared, code: &[u8]) {
        let Some(old) = shared.index.remove(code) else {
            return;
        };
        let pending = old.clicks.swap(0, Ordering::SeqCst);
        if pending > 0 {
            *self
                .orphans
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(String::from_utf8_lossy(code).into_owned())
                .or_default() += pending;
        }
    }

    /// Inserts a link into the index, keeping the unflushed clicks of an entry it replaces.
    fn fill_index(&self, shared: &Shared, code: &str, link: &Cached) {
        let owner = shared.owners.intern(&link.owner);
        let entry = NewEntry::new(
            code.as_bytes(),
            link.url.as_bytes(),
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

    /// Miss path: negative cache, Redis, Postgres. A link found is put in the index unless an
    /// invalidation of its code overlapped the read (then it is read again from Postgres, up
    /// to three times, and returned without being kept).
    async fn fetch(&self, shared: &Shared, code: &str) -> Result<Fetched, StoreError> {
        if ShortCode::parse(code).is_err() || self.negative_hit(code) {
            return Ok(Fetched::Missing);
        }
        let mut last = None;
        for attempt in 0..3 {
            let mark = self.mark(code);
            let Some((link, from_postgres)) = self.read(code, attempt == 0).await? else {
                // Not an absence that a concurrent create may have ended.
                if self.mark(code) == mark {
                    self.negative_insert(code);
                }
                return Ok(Fetched::Missing);
            };
            self.fill_index(shared, code, &link);
            if self.mark(code) == mark {
                if from_postgres {
                    self.fill_redis(shared, code, &link).await;
                }
                return Ok(Fetched::Found {
                    link,
                    indexed: true,
                });
            }
            self.remove_entry(shared, code.as_bytes());
            last = Some(link);
        }
        Ok(last.map_or(Fetched::Missing, |link| Fetched::Found {
            link,
            indexed: false,
        }))
    }

    /// The link from Redis (when `use_cache`) or Postgres; `true` when from Postgres.
    async fn read(
        &self,
        code: &str,
        use_cache: bool,
    ) -> Result<Option<(Cached, bool)>, StoreError> {
        if let Some(redis) = self.redis.as_ref().filter(|_| use_cache) {
            let mut conn = redis.conn.clone();
            let get = conn.get::<_, Option<String>>(cache_key(code));
            match tokio::time::timeout(REDIS_TIMEOUT, get).await {
                Ok(Ok(Some(json))) => {
                    if let Ok(link) = serde_json::from_str::<Cached>(&json) {
                        return Ok(Some((link, false)));
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "redis read failed; asking postgres"),
                Err(_) => tracing::debug!("redis read timed out; asking postgres"),
            }
        }
        Ok(self.select(code).await?.map(|(link, _)| (link, true)))
    }

    /// Writes a link read from Postgres into Redis, unless a newer generation or a delete's
    /// tombstone is there (one script: no window between the check and the write).
    async fn fill_redis(&self, shared: &Shared, code: &str, link: &Cached) {
        let Some(redis) = &self.redis else { return };
        let now = shared.clock.now_unix();
        let ttl = match link.expires_at {
            Some(at) => u64::try_from(at - now)
                .unwrap_or(0)
                .min(CACHE_TTL.as_secs()),
            None => CACHE_TTL.as_secs(),
        };
        let Ok(json) = serde_json::to_string(link) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let mut conn = redis.conn.clone();
        let mut fill = redis.fill.prepare_invoke();
        fill.key(cache_key(code))
            .key(tombstone_key(code))
            .arg(link.generation)
            .arg(json)
            .arg(ttl);
        match tokio::time::timeout(REDIS_TIMEOUT, fill.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "redis cache fill failed"),
            Err(_) => tracing::debug!("redis cache fill timed out"),
        }
    }

    async fn select(&self, code: &str) -> Result<Option<(Cached, u64)>, StoreError> {
        let row = self
            .with_client(async |c| {
                let statement = c
                    .prepare_cached(
                        "SELECT url, owner, created_at, expires_at, clicks, gen \
                         FROM links WHERE code = $1",
                    )
                    .await?;
                c.query_opt(&statement, &[&code]).await
            })
            .await?;
        Ok(row.map(|r| {
            let clicks: i64 = r.get(4);
            (
                Cached {
                    url: r.get(0),
                    owner: r.get(1),
                    created_at: r.get(2),
                    expires_at: r.get(3),
                    generation: r.get(5),
                },
                u64::try_from(clicks).unwrap_or(0),
            )
        }))
    }

    /// Counts one click straight in Postgres (a redirect answered without an index entry).
    async fn count_click(&self, code: &str, generation: i64) {
        let counted = self
            .with_client(async |c| {
                c.execute(
                    "UPDATE links SET clicks = clicks + 1 WHERE code = $1 AND gen = $2",
                    &[&code, &generation],
                )
                .await
            })
            .await;
        if let Err(e) = counted {
            tracing::warn!(error = %e, "a click answered from postgres was not counted");
        }
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
        let now = shared.clock.now_unix();
        let expires_at = Some(expiry(now, new.ttl_seconds)).filter(|&at| at != NEVER);
        let owner: &str = &new.owner;
        let (code, generation) = self
            .with_client(async |client| {
                let statement = client
                    .prepare_cached(
                        "INSERT INTO links (code, url, owner, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (code) DO UPDATE SET url = EXCLUDED.url, \
                         owner = EXCLUDED.owner, created_at = EXCLUDED.created_at, \
                         expires_at = EXCLUDED.expires_at, clicks = 0, \
                         gen = nextval('links_gen') \
                         WHERE links.expires_at IS NOT NULL AND links.expires_at <= $4 \
                         RETURNING gen",
                    )
                    .await?;
                let mut attempts = 0;
                loop {
                    let code = new.code.clone().unwrap_or_else(code::generate);
                    let inserted = client
                        .query_opt(
                            &statement,
                            &[&code.as_str(), &new.url.as_str(), &owner, &now, &expires_at],
                        )
                        .await?;
                    if let Some(row) = inserted {
                        return Ok(Ok((code, row.get::<_, i64>(0))));
                    }
                    attempts += 1;
                    if new.code.is_some() {
                        return Ok(Err(StoreError::CodeTaken));
                    }
                    if attempts >= 10 {
                        return Ok(Err(StoreError::Backend("no free generated code".into())));
                    }
                }
            })
            .await??;
        let link = Cached {
            url: new.url.as_str().to_owned(),
            owner: owner.to_owned(),
            created_at: now,
            expires_at,
            generation,
        };
        self.negative_remove(code.as_str());
        // A custom code may replace an expired link other instances still hold.
        if new.code.is_some() {
            self.invalidate(shared, code.as_str());
            self.broadcast(code.as_str(), generation).await;
        }
        self.fill_index(shared, code.as_str(), &link);
        Ok(LinkInfo {
            code,
            url: new.url.into_string(),
            owner: new.owner,
            created_at: now,
            expires_at,
            clicks: 0,
        })
    }

    /// Deletes `code` if `by` may, in one statement: the owner check is part of the delete,
    /// so a link another key re-created under this code meanwhile is never removed.
    /// `NotOwner` when the link is someone else's.
    pub(crate) async fn delete(
        &self,
        shared: &Shared,
        code: &str,
        by: &Deleter,
    ) -> Result<(), StoreError> {
        let owner: Option<&str> = match by {
            Deleter::Admin => None,
            Deleter::Owner(owner) => Some(owner),
        };
        let outcome = self
            .with_client(async |c| {
                let deleted = c
                    .query_opt(
                        "DELETE FROM links WHERE code = $1 AND ($2::text IS NULL OR owner = $2) \
                         RETURNING nextval('links_gen')",
                        &[&code, &owner],
                    )
                    .await?;
                if let Some(row) = deleted {
                    return Ok(Ok(row.get::<_, i64>(0)));
                }
                // Nothing deleted: say why (this read decides the error only).
                let exists = c
                    .query_opt("SELECT 1 FROM links WHERE code = $1", &[&code])
                    .await?
                    .is_some();
                Ok(Err(if exists {
                    StoreError::NotOwner
                } else {
                    StoreError::NotFound
                }))
            })
            .await?;
        let generation = outcome?;
        self.invalidate(shared, code);
        self.broadcast(code, generation).await;
        Ok(())
    }

    /// Drops `code` from Redis, leaves a tombstone of generation `gen` (fills of older rows
    /// are refused), and tells every instance to drop it.
    async fn broadcast(&self, code: &str, generation: i64) {
        let Some(redis) = &self.redis else { return };
        let mut conn = redis.conn.clone();
        let sent = async {
            let mut tombstone = redis.tombstone.prepare_invoke();
            tombstone
                .key(cache_key(code))
                .key(tombstone_key(code))
                .arg(generation)
                .arg(CACHE_TTL.as_secs());
            tombstone.invoke_async::<i64>(&mut conn).await?;
            conn.publish::<_, _, ()>(CHANNEL, code).await
        };
        match tokio::time::timeout(CHECK_TIMEOUT * 2, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, code,
                "invalidation not published; other instances drop the link at their next revalidation"),
            Err(_) => tracing::warn!(
                code,
                "invalidation not published in time; other instances drop the link at their next revalidation"
            ),
        }
    }

    /// Flushes the click deltas counted since the last flush. Returns (links, clicks).
    pub(crate) async fn flush_clicks(&self, shared: &Shared) -> Result<(u64, u64), StoreError> {
        let mut spare = self.spare.lock().await;
        std::mem::swap(&mut *shared.lock_dirty(), &mut *spare);
        let orphans =
            std::mem::take(&mut *self.orphans.lock().unwrap_or_else(PoisonError::into_inner));
        if spare.is_empty() && orphans.is_empty() {
            return Ok((0, 0));
        }
        let mut totals: HashMap<String, u64> = orphans;
        for code in spare.iter() {
            let delta = shared.index.with(code, |e| {
                e.dirty.store(false, Ordering::SeqCst);
                e.clicks.swap(0, Ordering::SeqCst)
            });
            if let (Some(delta @ 1..), Ok(code)) = (delta, std::str::from_utf8(code)) {
                *totals.entry(code.to_owned()).or_default() += delta;
            }
        }
        let (codes, deltas): (Vec<String>, Vec<i64>) = totals
            .into_iter()
            .map(|(code, n)| (code, i64::try_from(n).unwrap_or(i64::MAX)))
            .unzip();
        let written = self
            .with_client(async |c| {
                c.execute(
                    "UPDATE links SET clicks = links.clicks + d.n \
                     FROM unnest($1::text[], $2::bigint[]) AS d(code, n) WHERE links.code = d.code",
                    &[&codes, &deltas],
                )
                .await
            })
            .await;
        let result = match written {
            Ok(_) => Ok((
                codes.len() as u64,
                deltas.iter().map(|&d| d.unsigned_abs()).sum(),
            )),
            Err(e) => {
                // Put the deltas back: the next flush retries them.
                let mut orphans = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
                for (code, delta) in codes.into_iter().zip(&deltas) {
                    *orphans.entry(code).or_default() += delta.unsigned_abs();
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
        self.with_client(async |c| {
            c.execute(
                "DELETE FROM links WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
        })
        .await?;
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
            self.remove_entry(shared, &code);
        }
    }

    /// Every [`REVALIDATE_EVERY`] until stopped: [`Remote::revalidate`].
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

    /// Drops from the index (and from Redis) the links that Postgres no longer has, or has
    /// with other contents (deleted or replaced through another instance, invalidation lost).
    async fn revalidate(&self, shared: &Shared) -> Result<(), StoreError> {
        let mut codes = Vec::new();
        shared
            .index
            .for_each(|e| codes.push(e.code_str().to_owned()));
        for chunk in codes.chunks(1000) {
            let rows = self
                .with_client(async |c| {
                    c.query(
                        "SELECT code, url, owner, created_at, expires_at FROM links \
                         WHERE code = ANY($1)",
                        &[&chunk],
                    )
                    .await
                })
                .await?;
            let live: HashMap<String, tokio_postgres::Row> = rows
                .into_iter()
                .map(|r| (r.get::<_, String>(0), r))
                .collect();
            for code in chunk {
                let current = shared
                    .index
                    .with(code.as_bytes(), |e| match live.get(code) {
                        None => false,
                        Some(r) => {
                            e.url_str() == r.get::<_, &str>(1)
                                && *shared.owners.name(e.owner) == *r.get::<_, &str>(2)
                                && e.created_at == r.get::<_, i64>(3)
                                && e.expires_at() == r.get::<_, Option<i64>>(4)
                        }
                    });
                if current == Some(false) {
                    tracing::debug!(code = %code, "revalidation dropped a stale link");
                    self.invalidate(shared, code);
                    if let Some(redis) = &self.redis {
                        let mut conn = redis.conn.clone();
                        let del = conn.del::<_, ()>(cache_key(code));
                        let _ = tokio::time::timeout(REDIS_TIMEOUT, del).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Receives invalidations until stopped, resubscribing after a failure (and then dropping
    /// the whole index, since messages may have been missed). The subscription is pinged on
    /// its own connection every [`SUBSCRIPTION_PING_EVERY`]: one that does not answer within
    /// [`CHECK_TIMEOUT`] is dead (readiness says so) and is replaced. Revalidates the index
    /// alongside, with or without Redis.
    pub(crate) async fn subscribe(self: std::sync::Arc<Self>, shared: std::sync::Arc<Shared>) {
        let revalidate = self.revalidate_loop(&shared);
        match &self.redis {
            None => revalidate.await,
            Some(redis) => {
                tokio::join!(revalidate, self.receive(redis, &shared));
            }
        }
    }

    async fn receive(&self, redis: &Redis, shared: &Shared) {
        use futures_util::StreamExt;
        let mut had_gap = false;
        // Failed attempts in a row: the first and every 60th (about 30 s apart) are logged.
        let mut failures = 0u32;
        loop {
            let connected = async {
                let mut pubsub = redis.client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                () = self.stop.cancelled() => return,
                c = tokio::time::timeout(CONNECT_TIMEOUT * 2, connected) => c,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    failures = 0;
                    if had_gap {
                        if let Err(e) = self.flush_clicks(shared).await {
                            tracing::warn!(error = %e, "click flush before resync failed");
                        }
                        self.drop_all(shared);
                        tracing::info!("resubscribed to invalidations; local index dropped");
                    }
                    let (mut sink, mut messages) = pubsub.split();
                    redis
                        .alive_at
                        .store(millis_since(self.base), Ordering::Release);
                    redis.subscribed.store(true, Ordering::Release);
                    let mut ping = tokio::time::interval(SUBSCRIPTION_PING_EVERY);
                    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            () = self.stop.cancelled() => return,
                            msg = messages.next() => match msg {
                                Some(msg) => {
                                    if let Ok(code) = std::str::from_utf8(msg.get_payload_bytes()) {
                                        self.invalidate(shared, code);
                                    }
                                }
                                None => {
                                    tracing::warn!("invalidation subscription closed; reconnecting");
                                    break;
                                }
                            },
                            _ = ping.tick() => {
                                let pong = sink.ping::<redis::Value>();
                                match tokio::time::timeout(CHECK_TIMEOUT, pong).await {
                                    Ok(Ok(_)) => redis
                                        .alive_at
                                        .store(millis_since(self.base), Ordering::Release),
                                    Ok(Err(e)) => {
                                        tracing::warn!(error = %e, "invalidation subscription failed its ping; reconnecting");
                                        break;
                                    }
                                    Err(_) => {
                                        tracing::warn!("invalidation subscription did not answer its ping; reconnecting");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    redis.subscribed.store(false, Ordering::Release);
                }
                Ok(Err(e)) if failures.is_multiple_of(60) => {
                    tracing::warn!(error = %e, failures, "cannot subscribe to invalidations");
                }
                Err(_) if failures.is_multiple_of(60) => {
                    tracing::warn!(failures, "subscribing to invalidations timed out");
                }
                Ok(Err(_)) | Err(_) => {}
            }
            had_gap = true;
            failures = failures.wrapping_add(1);
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// The answer for a link read but not in the index.
fn answer_from_row(shared: &Shared, link: Cached) -> Lookup {
    if link
        .expires_at
        .is_some_and(|at| shared.clock.now_unix() >= at)
    {
        Lookup::Expired
    } else {
        Lookup::Found(Bytes::from(link.url))
    }
}

/// Used by `Store::lookup_remote`: looks `code` up remotely, then answers from the index
/// (`visit`: counting a click; `HEAD` counts none). A link read but not kept in the index (its
/// code was invalidated during the read) is answered from the row read, its click counted in
/// Postgres.
pub(crate) async fn lookup(
    remote: &Remote,
    store: &super::Store,
    code: &str,
    visit: bool,
) -> Result<Lookup, StoreError> {
    let shared = &store.0.shared;
    let (link, indexed) = match remote.fetch(shared, code).await? {
        Fetched::Missing => return Ok(Lookup::Missing),
        Fetched::Found { link, indexed } => (link, indexed),
    };
    if indexed {
        let local = if visit {
            store.resolve(code)
        } else {
            store.peek(code)
        };
        if !matches!(local, Lookup::Missing) {
            return Ok(local);
        }
    }
    let generation = link.generation;
    let answer = answer_from_row(shared, link);
    if visit && matches!(answer, Lookup::Found(_)) {
        remote.count_click(code, generation).await;
    }
    Ok(answer)
}
