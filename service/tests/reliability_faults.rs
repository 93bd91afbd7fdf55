//! Reliability: Postgres and Redis faults under load, in the scale-out setup.
//!
//! Each case starts a private Postgres and Redis (`scripts/services.sh` in a temporary
//! directory, on ports of their own, so the other scale-out tests are not disturbed), two
//! in-process linkr instances on them, and a bounded load over loopback; it then stops or
//! restarts one backend with `scripts/services.sh stop-redis|start-redis|stop-postgres|
//! start-postgres` and checks what the clients saw. Each prints one `RELIABILITY {json}` line
//! (see `scripts/reliability.sh`) and asserts.

mod scaleout_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scaleout_support::{ALICE, Instance, PrivateServices};

/// One request of the load: when it was sent (since the load started), how long it took, and
/// its status (0: no answer: a connection error or the client's timeout).
#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    took: Duration,
    status: u16,
    write: bool,
}

/// A bounded open-loop load: `rate` requests per second in all, spread over a few tasks, each
/// a redirect or (one in `write_every`) a create, alternating between the instances.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// Codes acknowledged with a 201 by the load.
    created: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    start: Instant,
}

const TASKS: usize = 4;
/// The load's client gives up on a request after this (an answer slower than that is a hang).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Load {
    fn start(bases: Vec<String>, codes: Vec<String>, rate: u32, write_every: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let created = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap();
        let period = Duration::from_secs_f64(TASKS as f64 / f64::from(rate));
        let tasks = (0..TASKS)
            .map(|task| {
                let (stop, samples, created) = (stop.clone(), samples.clone(), created.clone());
                let (client, bases, codes) = (client.clone(), bases.clone(), codes.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    // Late requests are sent late, not in a burst.
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut n = task as u32;
                    let mut in_flight = tokio::task::JoinSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        n += 1;
                        let base = bases[n as usize % bases.len()].clone();
                        let write = write_every.is_some_and(|every| n.is_multiple_of(every));
                        let code = codes[n as usize % codes.len()].clone();
                        let (client, samples, created) =
                            (client.clone(), samples.clone(), created.clone());
                        in_flight.spawn(async move {
                            let sent = Instant::now();
                            let request =
                                if write {
                                    client.post(format!("{base}/v1/links")).bearer_auth(ALICE).json(
                                    &json!({ "url": format!("https://example.com/load/{n}") }),
                                )
                                } else {
                                    client.get(format!("{base}/{code}"))
                                };
                            let status = match request.send().await {
                                Ok(response) => {
                                    let status = response.status().as_u16();
                                    let body: Value = response.json().await.unwrap_or(Value::Null);
                                    if status == 201 {
                                        let code = body["code"].as_str().unwrap_or_default();
                                        created.lock().unwrap().push(code.to_string());
                                    }
                                    if status == 503 {
                                        assert_eq!(body["error"], "unavailable", "{body}");
                                    }
                                    status
                                }
                                Err(_) => 0,
                            };
                            samples.lock().unwrap().push(Sample {
                                at: sent - start,
                                took: sent.elapsed(),
                                status,
                                write,
                            });
                        });
                        while in_flight.try_join_next().is_some() {}
                    }
                    while in_flight.join_next().await.is_some() {}
                })
            })
            .collect();
        Self {
            stop,
            samples,
            created,
            tasks,
            start,
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn finish(self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load task panicked");
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let created = std::mem::take(&mut *self.created.lock().unwrap());
        (samples, created)
    }
}

fn by_status<'a>(samples: impl Iterator<Item = &'a Sample>) -> BTreeMap<u16, u64> {
    let mut counts = BTreeMap::new();
    for s in samples {
        *counts.entry(s.status).or_insert(0) += 1;
    }
    counts
}

/// Runs `scripts/services.sh <command>` off the runtime's threads.
async fn services(svc: &Arc<PrivateServices>, command: &'static str) {
    let svc = svc.clone();
    tokio::task::spawn_blocking(move || svc.run(command))
        .await
        .unwrap();
}

async fn create_links(instance: &Instance, n: usize) -> Vec<String> {
    let mut codes = Vec::with_capacity(n);
    for i in 0..n {
        codes.push(
            instance
                .create_ok(json!({ "url": format!("https://example.com/seed/{i}") }))
                .await,
        );
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_redis_stopped_under_a_redirect_load() {
    let svc = Arc::new(
        tokio::task::spawn_blocking(PrivateServices::start)
            .await
            .unwrap(),
    );
    let (a, b) = tokio::join!(
        Instance::ready_on(&svc.database_url, Some(&svc.redis_url)),
        Instance::ready_on(&svc.database_url, Some(&svc.redis_url))
    );
    let codes = create_links(&a, 22).await;
    // The first two are deleted during and after the outage; the load asks for the others.
    let (deleted_during, deleted_after) = (codes[0].clone(), codes[1].clone());
    for code in [&deleted_during, &deleted_after] {
        assert_eq!(b.get(&format!("/{code}")).await.status(), 302);
    }
    let load = Load::start(
        vec![a.base.clone(), b.base.clone()],
        codes[2..].to_vec(),
        200,
        None,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let outage_start = load.now();
    services(&svc, "stop-redis").await;
    // Both instances keep serving and name the failed check.
    for instance in [&a, &b] {
        let (status, body) = instance.wait_readiness("degraded").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["redis"]["ok"], false, "{body}");
        assert_eq!(body["checks"]["postgres"]["ok"], true, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("redis"),
            "{body}"
        );
    }
    // Writes and misses go to Postgres alone; a delete reaches B without pub/sub (revalidation).
    let fresh = a
        .create_ok(json!({ "url": "https://example.com/during-the-outage" }))
        .await;
    assert_eq!(b.get(&format!("/{fresh}")).await.status(), 302);
    assert_eq!(a.delete(ALICE, &deleted_during).await.status(), 204);
    b.wait_status(&format!("/{deleted_during}"), 404).await;
    let held = Duration::from_secs(3).saturating_sub(load.now() - outage_start);
    tokio::time::sleep(held).await;

    services(&svc, "start-redis").await;
    let restarted = Instant::now();
    let outage_end = load.now();
    tokio::join!(a.wait_readiness("ready"), b.wait_readiness("ready"));
    let recovery = restarted.elapsed();
    // Invalidations flow again.
    assert_eq!(b.get(&format!("/{deleted_after}")).await.status(), 302);
    assert_eq!(a.delete(ALICE, &deleted_after).await.status(), 204);
    b.wait_status(&format!("/{deleted_after}"), 404).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (samples, _) = load.finish().await;

    let all = by_status(samples.iter());
    let during = by_status(
        samples
            .iter()
            .filter(|s| s.at >= outage_start && s.at < outage_end),
    );
    let requests = samples.len() as u64;
    let served = all.get(&302).copied().unwrap_or(0);
    let server_errors: u64 = all.range(500..600).map(|(_, n)| n).sum();
    let unanswered = all.get(&0).copied().unwrap_or(0);
    let during_requests: u64 = during.values().sum();
    let during_served = during.get(&302).copied().unwrap_or(0);
    println!(
        "RELIABILITY {}",
        json!({
            "case": "faults_redis_stopped_under_a_redirect_load",
            "tried": format!(
                "two linkr instances on a private Postgres and Redis under 200 redirects/s; Redis \
                 stopped for {:.1} s (scripts/services.sh stop-redis) and started again; a create, \
                 a miss and a delete during the outage",
                (outage_end - outage_start).as_secs_f64()
            ),
            "figures": {
                "requests": requests,
                "server_errors": server_errors,
                "unanswered": unanswered,
                "served_share": served as f64 / requests as f64,
                "requests_during_outage": during_requests,
                "served_share_during_outage": during_served as f64 / during_requests.max(1) as f64,
                "recovery_ms": recovery.as_millis() as u64,
            }
        })
    );
    assert!(
        during_requests > 100,
        "the load ran through the outage: {during:?}"
    );
    assert_eq!(server_errors, 0, "{all:?}");
    assert_eq!(served, requests, "every redirect served: {all:?}");
    assert!(recovery < Duration::from_secs(10), "{recovery:?}");
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_postgres_restarted_under_a_write_and_redirect_load() {
    let svc = Arc::new(
        tokio::task::spawn_blocking(PrivateServices::start)
            .await
            .unwrap(),
    );
    let (a, b) = tokio::join!(
        Instance::ready_on(&svc.database_url, Some(&svc.redis_url)),
        Instance::ready_on(&svc.database_url, Some(&svc.redis_url))
    );
    let codes = create_links(&a, 20).await;
    for code in &codes {
        assert_eq!(b.get(&format!("/{code}")).await.status(), 302);
    }
    // 150 requests/s, one in five a create.
    let load = Load::start(
        vec![a.base.clone(), b.base.clone()],
        codes.clone(),
        150,
        Some(5),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let outage_start = load.now();
    services(&svc, "stop-postgres").await;
    for instance in [&a, &b] {
        let (status, body) = instance.wait_readiness("degraded").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["postgres"]["ok"], false, "{body}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    services(&svc, "start-postgres").await;
    let restarted = Instant::now();
    let outage_end = load.now();
    // Both instances recover by themselves: ready, and a create on each answers 201.
    let recovered = async {
        tokio::join!(a.wait_readiness("ready"), b.wait_readiness("ready"));
        for instance in [&a, &b] {
            loop {
                let created = instance
                    .create(ALICE, json!({ "url": "https://example.com/after-restart" }))
                    .await;
                if created.status() == 201 {
                    break;
                }
                assert_eq!(created.status(), 503);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), recovered)
        .await
        .expect("recovered within 20 s");
    let recovery = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (samples, created) = load.finish().await;

    // Every acknowledged link resolves.
    let mut acknowledged_lost = 0u64;
    for (i, code) in created.iter().enumerate() {
        let instance = if i % 2 == 0 { &a } else { &b };
        if instance.get(&format!("/{code}")).await.status() != 302 {
            acknowledged_lost += 1;
        }
    }
    let expected = |s: &Sample| if s.write { 201 } else { 302 };
    let lost = samples
        .iter()
        .filter(|s| s.status != expected(s) && s.status != 503)
        .count() as u64;
    let writes_during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.write && s.at >= outage_start && s.at < outage_end)
        .collect();
    let writes_503 = writes_during.iter().filter(|s| s.status == 503).count() as u64;
    let slowest_write_during = writes_during
        .iter()
        .map(|s| s.took)
        .max()
        .unwrap_or_default();
    let redirects_during = by_status(
        samples
            .iter()
            .filter(|s| !s.write && s.at >= outage_start && s.at < outage_end),
    );
    let server_errors = samples
        .iter()
        .filter(|s| (500..600).contains(&s.status) && s.status != 503)
        .count() as u64;
    println!(
        "RELIABILITY {}",
        json!({
            "case": "faults_postgres_restarted_under_a_write_and_redirect_load",
            "tried": format!(
                "two linkr instances on a private Postgres and Redis under 150 requests/s (one in \
                 five a create); Postgres stopped for {:.1} s (scripts/services.sh stop-postgres) \
                 and started again; every acknowledged link resolved afterwards",
                (outage_end - outage_start).as_secs_f64()
            ),
            "figures": {
                "requests": samples.len() as u64,
                "requests_lost": lost,
                "server_errors": server_errors,
                "writes_during_outage": writes_during.len() as u64,
                "writes_503_during_outage": writes_503,
                "slowest_write_during_outage_ms": slowest_write_during.as_millis() as u64,
                "redirects_served_during_outage": redirects_during.get(&302).copied().unwrap_or(0),
                "links_created": created.len() as u64,
                "acknowledged_lost": acknowledged_lost,
                "recovery_ms": recovery.as_millis() as u64,
            }
        })
    );
    assert!(writes_503 > 0, "the outage was seen by writes");
    assert_eq!(
        lost,
        0,
        "only 503s besides successes: {:?}",
        by_status(samples.iter())
    );
    assert_eq!(server_errors, 0);
    assert!(
        slowest_write_during < Duration::from_secs(4),
        "a write hung: {slowest_write_during:?}"
    );
    assert_eq!(
        redirects_during.keys().copied().collect::<Vec<_>>(),
        [302],
        "links in the index are served meanwhile"
    );
    assert_eq!(acknowledged_lost, 0);
    tokio::join!(a.stop(), b.stop());
}
