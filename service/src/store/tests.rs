//! Store tests: a real redb file in a temporary directory, no mocks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;

const T0: i64 = 1_700_000_000;

fn open(dir: &Path, clock: Clock) -> Store {
    Store::open(StoreConfig::new(dir), clock).expect("store opens")
}

fn link(url: &str, code: Option<&str>) -> NewLink {
    NewLink {
        url: TargetUrl::parse(url).unwrap(),
        code: code.map(|c| ShortCode::parse(c).unwrap()),
        owner: Arc::from("alice"),
        ttl_seconds: None,
    }
}

fn location(store: &Store, code: &str) -> Option<String> {
    match store.resolve(code) {
        Lookup::Found(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
        _ => None,
    }
}

#[tokio::test]
async fn create_resolve_info() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    store.check().unwrap();
    let created = store
        .create(link("https://Example.com/a b", None))
        .await
        .unwrap();
    let code = created.code.as_str().to_owned();
    assert_eq!(code.len(), 7);
    assert_eq!(created.url, "https://example.com/a%20b");
    assert_eq!(created.owner.as_ref(), "alice");
    assert_eq!(
        (created.created_at, created.expires_at, created.clicks),
        (T0, None, 0)
    );

    assert_eq!(
        location(&store, &code).as_deref(),
        Some("https://example.com/a%20b")
    );
    assert_eq!(
        location(&store, &code).as_deref(),
        Some("https://example.com/a%20b")
    );
    assert_eq!(store.resolve("nope"), Lookup::Missing);
    assert_eq!(store.resolve(""), Lookup::Missing);
    assert_eq!(store.resolve(&"x".repeat(100)), Lookup::Missing);

    let info = store.info(&code).unwrap();
    assert_eq!(
        info,
        LinkInfo {
            clicks: 2,
            ..created
        }
    );
    assert!(store.info("nope").is_none());
    let stats = store.stats();
    assert_eq!((stats.links, stats.creates, stats.commits), (1, 1, 1));
    store.close().await.unwrap();
}

#[tokio::test]
async fn resolve_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::system());
    let long = "L".repeat(64);
    let mut ttl = link("https://example.com/ttl", Some("ttl"));
    ttl.ttl_seconds = Some(3_600);
    store.create(ttl).await.unwrap();
    let short = store
        .create(link("https://example.com/x", None))
        .await
        .unwrap();
    store
        .create(link("https://example.com/y", Some(&long)))
        .await
        .unwrap();
    let codes = [short.code.as_str(), long.as_str(), "ttl", "missing"];
    // Warm up: the dirty list reaches its high-water mark once.
    for code in codes {
        store.resolve(code);
    }
    store.flush_clicks().await.unwrap();
    let (found, allocs) = crate::alloc::count(|| {
        let mut found = 0;
        for _ in 0..1_000 {
            for code in codes {
                found += usize::from(matches!(store.resolve(code), Lookup::Found(_)));
            }
        }
        found
    });
    assert_eq!(found, 3_000);
    assert_eq!(allocs.allocs, 0, "resolve allocated: {allocs:?}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn custom_codes_conflict_and_generated_codes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    let first = store
        .create(link("https://example.com/1", Some("mine")))
        .await
        .unwrap();
    assert_eq!(first.code.as_str(), "mine");
    let again = store
        .create(link("https://example.com/2", Some("mine")))
        .await;
    assert_eq!(again, Err(StoreError::CodeTaken));
    assert_eq!(
        location(&store, "mine").as_deref(),
        Some("https://example.com/1")
    );

    let mut codes = HashSet::new();
    for i in 0..200 {
        let info = store
            .create(link(&format!("https://example.com/g/{i}"), None))
            .await
            .unwrap();
        assert!(codes.insert(info.code));
    }
    assert_eq!(store.len(), 201);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_code_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    for round in 0..5 {
        let code = format!("race{round}");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let code = code.clone();
                tokio::spawn(async move {
                    store
                        .create(link(&format!("https://example.com/{i}"), Some(&code)))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(info) => winners.push(info.url),
                Err(e) => assert_eq!(e, StoreError::CodeTaken),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(location(&store, &code), Some(winners.pop().unwrap()));
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::system());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create(link(&format!("https://example.com/{i}"), None))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        let info = task.await.unwrap();
        assert!(store.resolve(info.code.as_str()) != Lookup::Missing);
    }
    let stats = store.stats();
    assert_eq!(stats.creates, 64);
    assert!(stats.commits <= 64, "{stats:?}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn links_and_clicks_persist_across_close_and_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    let a = store
        .create(link("https://example.com/a", None))
        .await
        .unwrap();
    let mut b = link("https://example.com/b", Some("bee"));
    b.owner = Arc::from("bob");
    b.ttl_seconds = Some(600);
    store.create(b).await.unwrap();
    for _ in 0..3 {
        store.resolve(a.code.as_str());
    }
    store.resolve("bee");
    store.flush_clicks().await.unwrap();
    for _ in 0..2 {
        store.resolve(a.code.as_str());
    }
    store.close().await.unwrap();

    let store = open(dir.path(), Clock::manual(T0));
    assert_eq!(store.len(), 2);
    let a2 = store.info(a.code.as_str()).unwrap();
    assert_eq!(a2, LinkInfo { clicks: 5, ..a });
    let b2 = store.info("bee").unwrap();
    assert_eq!(b2.owner.as_ref(), "bob");
    assert_eq!(
        (b2.clicks, b2.created_at, b2.expires_at),
        (1, T0, Some(T0 + 600))
    );
    assert_eq!(
        location(&store, "bee").as_deref(),
        Some("https://example.com/b")
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn flush_writes_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    let a = store
        .create(link("https://example.com/a", None))
        .await
        .unwrap();
    let b = store
        .create(link("https://example.com/b", None))
        .await
        .unwrap();
    assert_eq!(store.flush_clicks().await, Ok(0));
    let commits = store.stats().commits;
    for _ in 0..3 {
        store.resolve(a.code.as_str());
    }
    store.resolve(b.code.as_str());
    assert_eq!(store.flush_clicks().await, Ok(2));
    store.resolve(a.code.as_str());
    assert_eq!(store.flush_clicks().await, Ok(1));
    assert_eq!(store.flush_clicks().await, Ok(0));
    let stats = store.stats();
    assert_eq!(stats.clicks_flushed, 5);
    assert_eq!(stats.click_flushes, 2);
    assert_eq!(stats.commits, commits + 2);
    assert_eq!(stats.flush_errors, 0);
    store.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn maintenance_flushes_clicks_on_its_interval_and_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    let a = store
        .create(link("https://example.com/a", None))
        .await
        .unwrap();
    for _ in 0..3 {
        store.resolve(a.code.as_str());
    }
    let stop = CancellationToken::new();
    let task = store.spawn_maintenance(stop.clone());
    // Paused time advances to the next tick while the runtime waits for the flush.
    store.flushed_at_least(1).await;
    assert_eq!(store.stats().clicks_flushed, 3);

    store.resolve(a.code.as_str());
    stop.cancel();
    task.await.unwrap();
    assert_eq!(store.stats().clicks_flushed, 4);
    store.close().await.unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    assert_eq!(store.info(a.code.as_str()).unwrap().clicks, 4);
    store.close().await.unwrap();
}

#[tokio::test]
async fn expired_links_answer_expired_then_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let store = open(dir.path(), clock.clone());
    let mut short = link("https://example.com/short", Some("short"));
    short.ttl_seconds = Some(10);
    let info = store.create(short).await.unwrap();
    assert_eq!(info.expires_at, Some(T0 + 10));
    store
        .create(link("https://example.com/keep", Some("keep")))
        .await
        .unwrap();

    clock.advance(9);
    assert!(matches!(store.resolve("short"), Lookup::Found(_)));
    assert_eq!(store.purge_expired().await, Ok(0));
    clock.advance(1);
    assert_eq!(store.resolve("short"), Lookup::Expired);
    assert!(store.info("short").is_some());

    assert_eq!(store.purge_expired().await, Ok(1));
    assert_eq!(store.resolve("short"), Lookup::Missing);
    assert!(matches!(store.resolve("keep"), Lookup::Found(_)));
    assert_eq!(store.stats().purged, 1);
    store.close().await.unwrap();

    let store = open(dir.path(), clock.clone());
    assert_eq!(store.resolve("short"), Lookup::Missing);
    assert_eq!(store.len(), 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_code_of_an_expired_link_can_be_reused_before_the_purge() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let store = open(dir.path(), clock.clone());
    let mut old = link("https://example.com/old", Some("reuse"));
    old.ttl_seconds = Some(5);
    store.create(old).await.unwrap();
    store.resolve("reuse");
    store.flush_clicks().await.unwrap();
    clock.advance(5);
    let new = store
        .create(link("https://example.com/new", Some("reuse")))
        .await
        .unwrap();
    assert_eq!(new.expires_at, None);
    assert_eq!(
        location(&store, "reuse").as_deref(),
        Some("https://example.com/new")
    );
    assert_eq!(store.purge_expired().await, Ok(0));
    store.close().await.unwrap();

    let store = open(dir.path(), clock);
    let info = store.info("reuse").unwrap();
    assert_eq!(
        (info.url.as_str(), info.clicks),
        ("https://example.com/new", 1)
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn delete_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    store
        .create(link("https://example.com/a", Some("gone")))
        .await
        .unwrap();
    store
        .create(link("https://example.com/b", Some("stays")))
        .await
        .unwrap();
    store.resolve("gone");
    store.flush_clicks().await.unwrap();
    assert_eq!(store.delete("gone").await, Ok(()));
    assert_eq!(store.resolve("gone"), Lookup::Missing);
    assert!(store.info("gone").is_none());
    assert_eq!(store.delete("gone").await, Err(StoreError::NotFound));
    assert_eq!(store.delete("not valid!").await, Err(StoreError::NotFound));
    assert_eq!(store.stats().deletes, 1);
    store.close().await.unwrap();

    let store = open(dir.path(), Clock::manual(T0));
    assert!(store.info("gone").is_none());
    assert_eq!(store.len(), 1);
    // A new link with the deleted code starts from zero clicks.
    store
        .create(link("https://example.com/c", Some("gone")))
        .await
        .unwrap();
    assert_eq!(store.info("gone").unwrap().clicks, 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn operations_after_close_fail_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    store
        .create(link("https://example.com/a", Some("a")))
        .await
        .unwrap();
    let other_handle = store.clone();
    store.close().await.unwrap();
    assert_eq!(store.close().await, Ok(()));
    assert_eq!(other_handle.close().await, Ok(()));
    assert_eq!(
        store.create(link("https://example.com/b", None)).await,
        Err(StoreError::Closed)
    );
    assert_eq!(store.delete("a").await, Err(StoreError::Closed));
    assert_eq!(store.flush_clicks().await, Err(StoreError::Closed));
    assert_eq!(store.purge_expired().await, Err(StoreError::Closed));
    assert_eq!(store.check(), Err(StoreError::Closed));
    // The database file is released: it can be opened again in this process.
    let reopened = open(dir.path(), Clock::manual(T0));
    assert_eq!(reopened.len(), 1);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_flushes_and_releases_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Clock::manual(T0));
    store
        .create(link("https://example.com/a", Some("a")))
        .await
        .unwrap();
    store.resolve("a");
    drop(store);
    // The writer finishes on its own thread; opening waits for nothing but may race it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(StoreConfig::new(dir.path()), Clock::manual(T0)) {
            Ok(store) => break store,
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("open"), "{e}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(store.info("a").unwrap().clicks, 1);
    store.close().await.unwrap();
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    txn.open_table(meta)
        .unwrap()
        .insert("schema_version", 99)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let err = Store::open(StoreConfig::new(dir.path()), Clock::system()).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn open_reports_an_unusable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(StoreConfig::new(&file), Clock::system()).unwrap_err();
    assert!(err.to_string().contains("data directory"), "{err}");
}

/// CPU time of the calling thread (unaffected by other processes on a busy machine).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident set size of this process in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `Rss` and `Anonymous` of `/proc/self/smaps_rollup` in bytes (the kernel's own sum over
/// every mapping; `rss_bytes` reads the counters of `/proc/self/statm`).
fn smaps_rollup() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("Rss:"), field("Anonymous:"))
}

/// Returns what mimalloc holds free to the OS (this thread's heap and abandoned ones).
fn collect_freed_memory() {
    #[cfg(feature = "mimalloc")]
    {
        unsafe extern "C" {
            fn mi_collect(force: bool);
        }
        // SAFETY: mimalloc is linked with the `mimalloc` feature; `mi_collect` frees only
        // memory that no allocation uses.
        unsafe { mi_collect(true) };
    }
}

/// CPU time of the whole process (every thread).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Durable creates per second: 16 concurrent clients for 2 s, then one client.
async fn create_throughput(store: &Store, label: &str) {
    for clients in [16, 1] {
        let before = store.stats();
        let deadline = Instant::now() + Duration::from_secs(2);
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        store
                            .create(link(&format!("https://example.com/new/{c}/{n}"), None))
                            .await
                            .unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            created += task.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let commits = store.stats().commits - before.commits;
        println!(
            "create ({label}, {clients} clients): {:.0}/s durable, {:.2} ms/commit, \
             {:.1} links/commit",
            created as f64 / secs,
            secs * 1e3 / commits.max(1) as f64,
            created as f64 / commits.max(1) as f64
        );
    }
}

const MILLION: usize = 1_000_000;

fn million_url(i: usize) -> String {
    format!("https://www.example.com/articles/2024/{i:07}?utm_source=linkr")
}

/// Writes 1M links (generated codes, one owner, ~60-byte URLs) straight into the tables.
#[test]
#[ignore = "fixture for store_1m_open_time_and_rss; run by it in a child process"]
fn store_1m_fixture() {
    let Ok(dir) = std::env::var("LINKR_1M_DIR") else {
        return;
    };
    let db = durable::open_db(&Path::new(&dir).join(DB_FILE)).unwrap();
    let links: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("links");
    let clicks: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("clicks");
    let mut written = 0;
    let mut record = Vec::new();
    while written < MILLION {
        let txn = db.begin_write().unwrap();
        {
            let mut links = txn.open_table(links).unwrap();
            let mut clicks = txn.open_table(clicks).unwrap();
            for _ in 0..(MILLION - written).min(100_000) {
                let code = crate::domain::code::generate();
                durable::encode_for_tests(&mut record, T0, "bench", &million_url(written));
                if links
                    .insert(code.as_str(), record.as_slice())
                    .unwrap()
                    .is_none()
                {
                    if written % 4 == 0 {
                        clicks.insert(code.as_str(), 7).unwrap();
                    }
                    written += 1;
                }
            }
        }
        txn.commit().unwrap();
    }
    if std::env::var_os("LINKR_1M_CRASH").is_some() {
        // Like kill -9: the database is not closed, so the next open repairs it.
        std::process::abort();
    }
}

/// Performance evidence: open time and RSS per link with 1M links.
/// `cargo test -p linkr --release --lib store_1m -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: builds a 1M-link database"]
async fn store_1m_open_time_and_rss() {
    println!(
        "process at start: RSS {:.1} MiB",
        rss_bytes() as f64 / 1048576.0
    );
    {
        let fresh = tempfile::tempdir().unwrap();
        let store = open(fresh.path(), Clock::system());
        create_throughput(&store, "empty store").await;
        store.close().await.unwrap();
    }
    println!(
        "process after the empty store: RSS {:.1} MiB",
        rss_bytes() as f64 / 1048576.0
    );
    // LINKR_1M_FIXTURE=/some/dir keeps the fixture between runs.
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        std::env::var_os("LINKR_1M_FIXTURE").map_or_else(|| tmp.path().to_owned(), Into::into);
    if !dir.join(DB_FILE).exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let build = Instant::now();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "store::tests::store_1m_fixture"])
            .env("LINKR_1M_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let crash = std::env::var_os("LINKR_1M_CRASH").is_some();
        assert!(status.success() != crash, "{status}");
        println!("fixture: {MILLION} links built in {:.1?}", build.elapsed());
    }
    let file = std::fs::metadata(dir.join(DB_FILE)).unwrap().len();
    println!("fixture: db file {:.1} MiB", file as f64 / 1048576.0);
    if std::env::var_os("LINKR_1M_BREAKDOWN").is_some() {
        let rss0 = rss_bytes();
        let index = index::Index::with_capacity(MILLION);
        let rss_empty = rss_bytes();
        println!(
            "breakdown: smaps_rollup after Index::with_capacity: {}",
            std::fs::read_to_string("/proc/self/smaps_rollup")
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("AnonHuge") || l.starts_with("Rss"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for i in 0..MILLION {
            let c = format!("{i:07}");
            index.insert_loaded(&index::NewEntry::new(
                c.as_bytes(),
                million_url(i).as_bytes(),
                T0,
                index::NEVER,
                0,
                0,
            ));
        }
        index.finish_load(MILLION);
        let rss_full = rss_bytes();
        println!(
            "breakdown: synthetic index without redb: empty {} B/link, full {} B/link",
            (rss_empty - rss0) as usize / MILLION,
            (rss_full - rss0) as usize / MILLION
        );
        drop(index);
        collect_freed_memory();
        let t = Instant::now();
        let rss0 = rss_bytes();
        let db = durable::open_db(&dir.join(DB_FILE)).unwrap();
        let t_open = t.elapsed();
        let rss1 = rss_bytes();
        let scan = Instant::now();
        let scanned = durable::scan_only_for_tests(&db);
        println!(
            "breakdown: iterate links only: {:.2?} ({scanned} bytes)",
            scan.elapsed()
        );
        let t = Instant::now();
        let (index, _owners) = durable::load(&db).unwrap();
        let t_load = t.elapsed();
        let rss2 = rss_bytes();
        println!(
            "breakdown: open_db {t_open:.2?} (+{} MiB), load {t_load:.2?} (+{} MiB), {} links",
            (rss1 - rss0) >> 20,
            (rss2 - rss1) >> 20,
            index.len()
        );
        let (used, reserved, table, arena) = index.footprint();
        let mut data = 0;
        index.for_each(|e| data += e.code().len() + e.url().len());
        println!(
            "breakdown: entries {} B/link in use ({} reserved), table {} B/link, \
             code + url {} B/link, arena chunks {} B/link",
            used / MILLION,
            reserved / MILLION,
            table / MILLION,
            data / MILLION,
            arena / MILLION
        );
        collect_freed_memory();
        println!(
            "breakdown: after load + mi_collect: ~{} B/link",
            (rss_bytes() - rss0) as usize / MILLION
        );
        drop(db);
        let rss3 = rss_bytes();
        println!(
            "breakdown: after dropping db: index alone ~{} B/link",
            (rss3 - rss0) as usize / MILLION
        );
        collect_freed_memory();
        println!(
            "breakdown: after dropping db + mi_collect: index alone ~{} B/link",
            (rss_bytes() - rss0) as usize / MILLION
        );
        return;
    }
    // Work on a copy so that the creates below do not change a kept fixture.
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join(DB_FILE), work.path().join(DB_FILE)).unwrap();
    let rss_before = rss_bytes();
    let started = Instant::now();
    let cpu = thread_cpu_time();
    let all_cpu = process_cpu_time();
    let store = open(work.path(), Clock::system());
    let open_cpu = thread_cpu_time() - cpu;
    let open_all_cpu = process_cpu_time() - all_cpu;
    let open_time = started.elapsed();
    let rss_after = rss_bytes();
    assert_eq!(store.len(), MILLION);
    let per_link_total = rss_after as f64 / MILLION as f64;
    let per_link_delta = (rss_after - rss_before) as f64 / MILLION as f64;
    println!(
        "open + load: {open_time:.2?} wall, {open_cpu:.2?} CPU; RSS {:.1} MiB = {per_link_total:.0} B/link \
         (process total), {per_link_delta:.0} B/link (growth during open)",
        rss_after as f64 / 1048576.0
    );
    let (smaps_rss, smaps_anon) = smaps_rollup();
    println!(
        "open + load: {open_all_cpu:.2?} CPU of all threads; smaps_rollup Rss {} B/link, \
         Anonymous {} B/link; before open {:.1} MiB",
        smaps_rss as usize / MILLION,
        smaps_anon as usize / MILLION,
        rss_before as f64 / 1048576.0
    );

    // Redirect path over the loaded index.
    let codes: Vec<String> = {
        let mut codes = Vec::with_capacity(10_000);
        store.0.shared.index.for_each(|e| {
            if codes.len() < 10_000 {
                codes.push(e.code_str().to_owned());
            }
        });
        codes
    };
    let started = Instant::now();
    let mut found = 0usize;
    for _ in 0..100 {
        for code in &codes {
            found += usize::from(matches!(store.resolve(code), Lookup::Found(_)));
        }
    }
    let per = started.elapsed() / found as u32;
    println!("resolve: {per:?} per lookup ({found} lookups, one thread)");

    create_throughput(&store, "1M links").await;
    store.close().await.unwrap();
    assert!(
        open_time < Duration::from_secs(2),
        "open took {open_time:?}"
    );
}

/// Baseline for the index layout: the brief's `DashMap<CompactString, Entry>` with a
/// per-link `Bytes` (cloned once so it is shared) and an interned owner, same URLs.
/// `cargo test -p linkr --release --lib store_1m_dashmap -- --ignored --nocapture`
#[test]
#[ignore = "slow: memory of the DashMap baseline at 1M links"]
fn store_1m_dashmap_baseline() {
    #[allow(dead_code)]
    struct DashEntry {
        location: Bytes,
        owner: Arc<str>,
        created_at: i64,
        expires_at: Option<i64>,
        clicks: std::sync::atomic::AtomicU64,
        dirty: AtomicBool,
    }
    let owner: Arc<str> = Arc::from("bench");
    let rss_before = rss_bytes();
    let map = dashmap::DashMap::<CompactString, DashEntry>::new();
    for i in 0..MILLION {
        let location = Bytes::copy_from_slice(million_url(i).as_bytes());
        drop(location.clone());
        map.insert(
            CompactString::new(crate::domain::code::generate().as_str()),
            DashEntry {
                location,
                owner: owner.clone(),
                created_at: T0,
                expires_at: None,
                clicks: Default::default(),
                dirty: AtomicBool::new(false),
            },
        );
    }
    let grown = rss_bytes() - rss_before;
    println!(
        "dashmap baseline: {} links, {} B/link (entry {} B + key 24 B per bucket)",
        map.len(),
        grown as usize / MILLION,
        size_of::<DashEntry>()
    );
}
