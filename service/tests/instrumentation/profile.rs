//! CPU profiles over HTTP. pprof arms one process-wide timer: the tests here take turns.

use std::io::Read;
use std::time::{Duration, Instant};

use pprof::protos::Message;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::support::{BUSY_FN, Harness};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn get(h: &Harness, query: &str) -> reqwest::Response {
    h.client
        .get(h.admin_url(&format!("/debug/pprof/profile{query}")))
        .send()
        .await
        .unwrap()
}

fn decode(gz: &[u8]) -> pprof::protos::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    pprof::protos::Profile::decode(raw.as_slice()).expect("pprof protobuf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pprof_has_samples_with_our_function_names() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;
    let load = h.drive_load(400);
    let res = get(&h, "?seconds=3&frequency=499").await;
    let sent = load.finish().await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"cpu.pb.gz\""
    );
    let body = res.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
    let p = decode(&body);
    assert!(sent > 0);
    assert!(!p.sample.is_empty(), "no samples after {sent} requests");
    let samples: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert!(samples > 0);
    let types: Vec<&str> = p
        .sample_type
        .iter()
        .map(|t| p.string_table[t.ty as usize].as_str())
        .collect();
    assert_eq!(types, ["samples", "cpu"]);
    assert!(
        p.string_table.iter().any(|s| s.contains(BUSY_FN)),
        "{BUSY_FN} not among {} strings",
        p.string_table.len()
    );
    assert!(
        p.string_table
            .iter()
            .any(|s| s.contains("linkr::metrics::track_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svg_and_folded_name_our_functions() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;

    let load = h.drive_load(400);
    let res = get(&h, "?seconds=2&frequency=499&format=svg").await;
    load.finish().await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    let svg = res.text().await.unwrap();
    assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(BUSY_FN));

    let load = h.drive_load(400);
    let res = get(&h, "?seconds=2&frequency=499&format=folded").await;
    load.finish().await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let folded = res.text().await.unwrap();
    assert!(!folded.is_empty());
    for line in folded.lines() {
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no count: {line}"));
        assert!(count.parse::<u64>().unwrap() > 0, "{line}");
        assert!(!stack.is_empty() && !stack.contains(";;"), "{line}");
    }
    assert!(
        folded
            .lines()
            .any(|l| l.contains(BUSY_FN) && l.contains("track_request"))
    );

    // The same capture again, in another format.
    let res = h
        .client
        .get(h.admin_url("/debug/pprof/last?format=folded"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), folded);
    let res = h
        .client
        .get(h.admin_url("/debug/pprof/last"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!decode(&res.bytes().await.unwrap()).sample.is_empty());
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_message() {
    let h = Harness::start().await;
    for (q, word) in [
        ("?seconds=0", "seconds"),
        ("?seconds=301", "seconds"),
        ("?seconds=ten", "seconds"),
        ("?frequency=0", "frequency"),
        ("?frequency=1001", "frequency"),
        ("?format=png", "format"),
        ("?include_libc=yes", "include_libc"),
    ] {
        let res = get(&h, q).await;
        assert_eq!(res.status(), 400, "{q}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_parameter", "{q}");
        assert!(
            body["message"].as_str().unwrap().contains(word),
            "{q}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_capture_while_one_runs_is_409() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;
    let first = tokio::spawn({
        let (client, url) = (
            h.client.clone(),
            h.admin_url("/debug/pprof/profile?seconds=2&format=folded"),
        );
        async move { client.get(url).send().await.unwrap().status() }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !linkr::profiling::is_capturing() {
        assert!(Instant::now() < deadline, "capture never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let res = get(&h, "?seconds=1").await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "profile_in_progress");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        get(&h, "?seconds=1&format=folded").await.status(),
        200,
        "free again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_back_to_back_captures_under_load() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;
    let load = h.drive_load(300);
    let started = Instant::now();
    for i in 0..20 {
        let format = ["pprof", "folded", "svg", "pprof"][i % 4];
        // Every other capture also unwinds samples taken inside libc (the knee run's setting).
        let libc = i % 2 == 1;
        let res = tokio::time::timeout(
            Duration::from_secs(60),
            get(
                &h,
                &format!("?seconds=1&frequency=997&format={format}&include_libc={libc}"),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("capture {i} hung"));
        assert_eq!(res.status(), 200, "capture {i}");
        let body = res.bytes().await.unwrap();
        if format == "pprof" {
            decode(&body);
        }
    }
    let sent = load.finish().await;
    assert!(sent > 20, "requests kept flowing: {sent}");
    assert!(started.elapsed() < Duration::from_secs(180));
    assert!(!linkr::profiling::is_capturing());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_libc_captures_and_reports_coverage() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;
    let load = h.drive_load(400);
    let res = get(
        &h,
        "?seconds=2&frequency=499&format=folded&include_libc=true",
    )
    .await;
    load.finish().await;
    assert_eq!(res.status(), 200);
    let header = |name: &str| -> f64 { res.headers()[name].to_str().unwrap().parse().unwrap() };
    let (samples, sampled, cpu, steal) = (
        header("x-profile-samples"),
        header("x-profile-sampled-cpu-seconds"),
        header("x-profile-process-cpu-seconds"),
        header("x-profile-host-steal-seconds"),
    );
    assert!(samples > 0.0);
    assert!(
        (sampled - samples / 499.0).abs() < 0.002,
        "{sampled} s for {samples} samples"
    );
    assert!(
        cpu > 0.0 && sampled <= cpu * 1.5 + 0.05 + steal,
        "sampled {sampled} s of {cpu} s, the host's steal {steal} s"
    );
    // At most all CPUs for the whole window (2 s), plus a tick of rounding.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!((0.0..=2.0 * cpus + 0.1).contains(&steal), "{steal} s");
    let folded = res.text().await.unwrap();
    assert!(folded.lines().any(|l| l.contains(BUSY_FN)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_ends_its_capture() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let h = Harness::start().await;
    let res = h
        .client
        .get(h.admin_url("/debug/pprof/profile?seconds=300"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    // The server notices the closed connection and stops sampling long before 300 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while linkr::profiling::is_capturing() {
        assert!(
            Instant::now() < deadline,
            "capture still running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&h, "?seconds=1&format=folded").await.status(), 200);
}
