//! The scale-out backends: two in-process linkr instances on one Postgres and one Redis.
//!
//! Needs a real Postgres and Redis: `LINKR_TEST_DATABASE_URL` and `LINKR_TEST_REDIS_URL`
//! (`scripts/services.sh` starts throwaway ones and prints both). Without them these tests
//! fail rather than pass silently. Faults (a blackholed or slow backend, a dead subscription)
//! are made with a TCP proxy in front of one instance's backend, so they touch no other test.

mod scaleout_support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{Value, json};

use scaleout_support::{ALICE, BOB, Instance, Proxy, WAIT, backend_urls, eventually, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_created_on_a_redirects_on_b_and_a_delete_reaches_b() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let url = format!("https://example.com/{}", unique("page"));
    let code = a.create_ok(json!({ "url": url })).await;

    let redirect = b.get(&format!("/{code}")).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], url.as_str());
    let stats: Value = b.stats(&code).await.json().await.unwrap();
    assert_eq!(stats["url"], url.as_str());

    // Not the owner, on B: refused there too.
    assert_eq!(b.delete(BOB, &code).await.status(), 403);
    assert_eq!(a.delete(ALICE, &code).await.status(), 204);
    assert_eq!(a.get(&format!("/{code}")).await.status(), 404);
    // B held the link in its index: the invalidation (pub/sub) removes it.
    b.wait_status(&format!("/{code}"), 404).await;
    assert_eq!(b.stats(&code).await.status(), 404);
    assert_eq!(b.delete(ALICE, &code).await.status(), 404);

    // Unknown codes: 404 on both, also when asked again (negative cache).
    for _ in 0..3 {
        assert_eq!(b.get("/no-such-code-here").await.status(), 404);
    }
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_on_both_instances_are_counted_after_the_flush() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let code = a
        .create_ok(json!({ "url": "https://example.com/clicks" }))
        .await;
    for _ in 0..3 {
        assert_eq!(a.get(&format!("/{code}")).await.status(), 302);
    }
    for _ in 0..2 {
        assert_eq!(b.get(&format!("/{code}")).await.status(), 302);
    }
    // Each instance sees its own clicks at once and the other's after its flush (50 ms).
    assert_eq!(eventually(5, || a.clicks(&code)).await, 5);
    assert_eq!(eventually(5, || b.clicks(&code)).await, 5);
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_code_taken_on_a_is_409_on_b() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let code = unique("mine");
    let body = json!({ "url": "https://example.com/a", "code": code });
    assert_eq!(a.create(ALICE, body.clone()).await.status(), 201);
    let taken = b.create(BOB, body).await;
    assert_eq!(taken.status(), 409);
    let error: Value = taken.json().await.unwrap();
    assert_eq!(error["error"], "code_taken", "{error}");
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_with_a_failing_postgres_check_when_the_database_is_down() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let database_url = format!("postgres://linkr@127.0.0.1:{port}/linkr");
    let instance = Instance::start(&database_url, None).await;

    // Never reached Postgres: nothing to serve, so not ready (not merely degraded).
    let started = Instant::now();
    let response = instance.get("/readyz").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness is bounded"
    );
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["postgres"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["store"]["ok"], true, "{body}");
    assert!(body["checks"].get("redis").is_none(), "{body}");
    assert!(
        !body.to_string().contains(&port.to_string()),
        "no internals in the body: {body}"
    );
    // Liveness never looks at dependencies.
    assert_eq!(instance.get("/healthz").await.status(), 200);
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_clicks_survive_a_restart() {
    let a = Instance::ready().await;
    let body: Value = a.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], true, "{body}");
    let code = a
        .create_ok(json!({ "url": "https://example.com/kept" }))
        .await;
    for _ in 0..2 {
        assert_eq!(a.get(&format!("/{code}")).await.status(), 302);
    }
    a.stop().await;

    // A new instance with a fresh data dir: everything comes from Postgres (and Redis).
    let a = Instance::ready().await;
    let redirect = a.get(&format!("/{code}")).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], "https://example.com/kept");
    assert_eq!(eventually(3, || a.clicks(&code)).await, 3);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_an_instance_reads_postgres_and_drops_deleted_links() {
    let (database_url, _) = backend_urls();
    let (a, c) = tokio::join!(Instance::ready(), Instance::ready_on(&database_url, None));
    let code = a
        .create_ok(json!({ "url": "https://example.com/no-redis" }))
        .await;
    assert_eq!(c.get(&format!("/{code}")).await.status(), 302);
    assert_eq!(a.delete(ALICE, &code).await.status(), 204);
    // No invalidation channel: the periodic revalidation (every 5 s) drops it.
    c.wait_status(&format!("/{code}"), 404).await;
    tokio::join!(a.stop(), c.stop());
}

/// A direct connection to the test database (to change rows behind linkr's back).
async fn database() -> tokio_postgres::Client {
    let (database_url, _) = backend_urls();
    let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let (_, redis_url) = backend_urls();
    redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_database_makes_misses_and_writes_a_fast_json_503_while_hits_are_served() {
    let (database_url, redis_url) = backend_urls();
    let (proxy, through) = Proxy::in_front_of(&database_url).await;
    let (a, b) = tokio::join!(
        Instance::ready(),
        Instance::ready_on(&through, Some(&redis_url))
    );
    let cached = b
        .create_ok(json!({ "url": "https://example.com/held" }))
        .await;
    let elsewhere = a
        .create_ok(json!({ "url": "https://example.com/elsewhere" }))
        .await;

    proxy.freeze();
    // A link in B's index still redirects.
    assert_eq!(b.get(&format!("/{cached}")).await.status(), 302);
    // A miss, a read and a write need the database: a JSON 503 with Retry-After, quickly (the
    // first after waiting out the statement timeout, the next ones at once: it just timed out).
    for (i, (method, path)) in [
        ("GET", format!("/{elsewhere}")),
        ("GET", format!("/v1/links/{cached}")),
        ("POST", "/v1/links".to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let request = match method {
            "GET" => b.client.get(b.url(&path)).bearer_auth(ALICE),
            _ => b
                .client
                .post(b.url(&path))
                .bearer_auth(ALICE)
                .json(&json!({ "url": "https://example.com/new" })),
        };
        let response = request.send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{method} {path}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        let limit = if i == 0 {
            Duration::from_secs(4)
        } else {
            // Waiting again would take the 2 s timeout.
            Duration::from_secs(1)
        };
        assert!(
            took < limit,
            "{method} {path} took {took:?} against a hung database"
        );
    }
    // Degraded, not unready: hits are served, and every replica shares this database.
    let started = Instant::now();
    let (status, body) = b.readiness().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "readiness is bounded"
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["postgres"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], true, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("postgres"),
        "{body}"
    );

    // The database answers again: B recovers by itself.
    proxy.thaw();
    b.wait_readiness("ready").await;
    b.wait_status(&format!("/{elsewhere}"), 302).await;
    assert_eq!(
        b.create(ALICE, json!({ "url": "https://example.com/after" }))
            .await
            .status(),
        201
    );
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_invalidation_subscription_is_reported_and_replaced_by_itself() {
    let (database_url, redis_url) = backend_urls();
    let (proxy, through) = Proxy::in_front_of(&redis_url).await;
    let (a, b) = tokio::join!(
        Instance::ready(),
        Instance::ready_on(&database_url, Some(&through))
    );
    // Its connection stays open but answers nothing; the cache connection still answers pings.
    assert!(
        proxy.freeze_subscribers() >= 1,
        "B subscribed through the proxy"
    );
    let (status, body) = b
        .wait_readiness_for("degraded", Duration::from_secs(5))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"]["ok"], false, "{body}");
    assert!(
        body["checks"]["redis"]["message"]
            .as_str()
            .unwrap()
            .contains("subscription"),
        "{body}"
    );
    // A new subscription, by itself; invalidations reach B again.
    b.wait_readiness("ready").await;
    let code = a
        .create_ok(json!({ "url": "https://example.com/resubscribed" }))
        .await;
    assert_eq!(b.get(&format!("/{code}")).await.status(), 302);
    assert_eq!(a.delete(ALICE, &code).await.status(), 204);
    b.wait_status(&format!("/{code}"), 404).await;
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_fill_that_read_the_row_before_its_delete_does_not_bring_it_back() {
    let (database_url, redis_url) = backend_urls();
    let (pg_proxy, pg_through) = Proxy::in_front_of(&database_url).await;
    let (redis_proxy, redis_through) = Proxy::in_front_of(&redis_url).await;
    let (a, b) = tokio::join!(
        Instance::ready(),
        Instance::ready_on(&pg_through, Some(&redis_through))
    );
    let code = a
        .create_ok(json!({ "url": "https://example.com/deleted-meanwhile" }))
        .await;

    // B's connections have the lookup prepared: a miss is then one round trip.
    for _ in 0..4 {
        assert_eq!(b.get(&format!("/{}", unique("warm"))).await.status(), 404);
    }
    // B reads the row, the answer held by the proxy; the delete commits meanwhile; B's
    // invalidation never arrives (its subscription is blackholed). B then fills the cache.
    pg_proxy.delay_responses(Duration::from_millis(600));
    redis_proxy.freeze_subscribers();
    let seen = pg_proxy.responses();
    let path = format!("/{code}");
    let miss = tokio::spawn({
        let client = b.client.clone();
        let url = b.url(&path);
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    pg_proxy.wait_responses_past(seen).await;
    assert_eq!(a.delete(ALICE, &code).await.status(), 204);
    let answered = miss.await.unwrap();
    assert!(answered == 302 || answered == 404, "{answered}");
    pg_proxy.delay_responses(Duration::ZERO);

    // No instance gets the deleted link from the cache.
    let c = Instance::ready().await;
    assert_eq!(c.get(&path).await.status(), 404);
    let mut redis = redis_connection().await;
    let cached: Option<String> = redis.get(format!("linkr:link:{{{code}}}")).await.unwrap();
    assert_eq!(cached, None, "the deleted link is back in Redis");
    // And B drops it by itself (resubscribed or revalidated).
    b.wait_status(&path, 404).await;
    tokio::join!(a.stop(), b.stop(), c.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_index_entries_are_revalidated_when_an_invalidation_never_comes() {
    let b = Instance::ready().await;
    let code = b
        .create_ok(json!({ "url": "https://example.com/removed-behind-its-back" }))
        .await;
    assert_eq!(b.get(&format!("/{code}")).await.status(), 302);
    // Deleted without an invalidation (as by an instance whose publish failed).
    let removed = database()
        .await
        .execute("DELETE FROM links WHERE code = $1", &[&code])
        .await
        .unwrap();
    assert_eq!(removed, 1);
    b.wait_status(&format!("/{code}"), 404).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_miss_during_a_storm_of_invalidations_of_its_code_still_redirects() {
    let (a, b) = tokio::join!(Instance::ready(), Instance::ready());
    let code = a
        .create_ok(json!({ "url": "https://example.com/storm" }))
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let storm = tokio::spawn({
        let (code, stop, sent) = (code.clone(), stop.clone(), sent.clone());
        async move {
            let mut redis = redis_connection().await;
            let deadline = Instant::now() + WAIT;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let _: () = redis.publish("linkr:invalidate", &code).await.unwrap();
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let storming = Instant::now();
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 20 {
        assert!(storming.elapsed() < WAIT, "the storm does not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..50 {
        let status = b.get(&format!("/{code}")).await.status().as_u16();
        *statuses.entry(status).or_insert(0) += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    storm.await.unwrap();
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent > 50, "the storm sent {sent} invalidations");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [302],
        "{statuses:?}"
    );
    // Every redirect counted a click, kept in the index or not.
    assert_eq!(eventually(50, || a.clicks(&code)).await, 50);
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_re_creation_of_its_code_leaves_the_new_link() {
    let (database_url, redis_url) = backend_urls();
    let (proxy, through) = Proxy::in_front_of(&database_url).await;
    let (a, b) = tokio::join!(
        Instance::ready_on(&through, Some(&redis_url)),
        Instance::ready()
    );
    let code = unique("reused");
    let created = a
        .create(
            ALICE,
            json!({ "url": "https://example.com/alice", "code": code, "ttl_seconds": 1 }),
        )
        .await;
    assert_eq!(created.status(), 201);
    b.wait_status(&format!("/{code}"), 410).await;

    // Alice's delete of her expired link goes out (its answers held by the proxy) while Bob
    // re-creates the code.
    proxy.delay_responses(Duration::from_millis(300));
    let seen = proxy.requests();
    let delete = tokio::spawn({
        let client = a.client.clone();
        let url = a.url(&format!("/v1/links/{code}"));
        async move {
            let response = client.delete(url).bearer_auth(ALICE).send().await.unwrap();
            response.status().as_u16()
        }
    });
    proxy.wait_requests_past(seen).await;
    let body = json!({ "url": "https://example.com/bob", "code": code });
    let recreated = b.create(BOB, body).await.status().as_u16();
    let deleted = delete.await.unwrap();
    proxy.delay_responses(Duration::ZERO);
    assert_eq!(recreated, 201, "Bob re-creates the expired code");
    assert!(deleted == 204 || deleted == 403, "{deleted}");
    // Alice's delete removed her link or nothing: Bob's link stays.
    let redirect = b.get(&format!("/{code}")).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], "https://example.com/bob");
    tokio::join!(a.stop(), b.stop());
}
