//! The reliability report (`scripts/lib/reliability.py`, written by `scripts/reliability.sh`) in
//! headless Chromium at 1280 px: built from a fixture run (libtest output with a passed, a failed
//! and an ignored case, and a skipped part), its figures and verdicts are on the page, text from
//! the cases is shown as text, and nothing is wider than the window.
//!
//! Needs python3 and Chromium (scripts/setup.sh installs both): missing, the test fails.
//! A second test reads a `cargo test --workspace -- --show-output` log the way
//! `scripts/reliability.sh --quick` does (no browser).

mod browser_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use browser_support::{decode_png, run_chromium};
use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/reliability.py")
}

/// What `cargo test -- --nocapture --test-threads=1` prints for three cases.
const LIBTEST_OUTPUT: &str = r#"
running 3 tests
test lifecycle_kill9_during_creates_loses_no_acknowledged_link_even_with_a_very_long_name_that_does_not_break ... RELIABILITY {"case":"lifecycle_kill9_during_creates_loses_no_acknowledged_link_even_with_a_very_long_name_that_does_not_break","tried":"8 clients created links; kill -9 after 300 201s <script>window.injected = 1</script>","figures":{"links_counted":306,"acknowledged_lost":0,"restart_ms":42}}
ok
test overload_at_ten_times_the_knee_sheds_with_429 ... RELIABILITY {"case":"overload_at_ten_times_the_knee_sheds_with_429","tried":"10x the knee for 20 s & then the knee again","figures":{"requests_lost":3,"server_errors":0,"peak_rss_bytes":52428800,"recovery_ms":1234}}
FAILED
test faults_redis_stopped_keeps_redirects ... ignored, needs LINKR_TEST_REDIS_URL

failures:

---- overload_at_ten_times_the_knee_sheds_with_429 stdout ----
assertion failed: requests_lost == 0

failures:
    overload_at_ten_times_the_knee_sheds_with_429

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 30.00s
"#;

/// Appended to a copy of the page: measures the layout and writes what it found into the DOM.
const CHECK_SCRIPT: &str = r#"<script>
(function () {
  const width = window.innerWidth;
  const overflowing = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.right > width + 0.5) overflowing.push(el.tagName + '.' + el.className + ' right ' + r.right);
    if ((el.tagName === 'TD' || el.tagName === 'TH') && el.scrollWidth > el.clientWidth + 1)
      overflowing.push(el.tagName + ' content ' + el.scrollWidth + ' > ' + el.clientWidth);
  }
  const figures = {};
  const sources = {};
  for (const td of document.querySelectorAll('td[data-figure]')) {
    figures[td.dataset.figure] = td.querySelector('.value').textContent;
    const src = td.querySelector('.src');
    if (src) sources[td.dataset.figure] = src.textContent;
  }
  const rows = [...document.querySelectorAll('tr.case')].map(tr => ({
    verdict: tr.querySelector('.verdict').textContent,
    case: tr.querySelector('code').textContent,
    tried: tr.cells[2].textContent,
  }));
  const out = document.createElement('pre');
  out.id = 'layout-check';
  out.textContent = JSON.stringify({
    width: width,
    documentWidth: document.documentElement.scrollWidth,
    overflowing: overflowing,
    banner: document.getElementById('verdict').textContent,
    figures: figures,
    sources: sources,
    rows: rows,
    injected: window.injected === 1,
    externalAssets: document.querySelectorAll('link[href], script[src], img[src]').length,
  });
  document.body.appendChild(out);
})();
</script>"#;

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[test]
fn reliability_report_shows_figures_and_verdicts_without_overflow_at_1280_px() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    std::fs::create_dir_all(out.join("parts")).unwrap();
    let log = out.join("reliability_fixture.log");
    std::fs::write(&log, LIBTEST_OUTPUT).unwrap();
    std::fs::write(
        out.join("runs.tsv"),
        format!(
            "service/tests/reliability_fixture.rs\t{}\t101\t31\trun\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::write(
        out.join("parts/fuzz.json"),
        r#"{"case":"fuzz","tried":"cargo fuzz, 30 s per target","passed":false,"skipped":true,"reason":"no nightly toolchain","figures":{}}"#,
    )
    .unwrap();
    std::fs::write(out.join("parts.tsv"), "fuzz\t0\t1\n").unwrap();

    let status = Command::new("python3")
        .arg(script())
        .args(["summarize", "--out"])
        .arg(out)
        .arg("--runs")
        .arg(out.join("runs.tsv"))
        .arg("--parts-runs")
        .arg(out.join("parts.tsv"))
        .args(["--mode", "full", "--commit", "abc1234"])
        .status()
        .expect("python3 runs (scripts/setup.sh installs it)");
    assert_eq!(status.code(), Some(1), "a failed case fails the run");

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (
            &summary["cases"],
            &summary["passed"],
            &summary["failed"],
            &summary["skipped"]
        ),
        (&4.into(), &1.into(), &1.into(), &2.into()),
        "{summary:#}"
    );
    assert_eq!(summary["acknowledged_lost"], 0);
    assert_eq!(summary["requests_lost"], 3);
    assert_eq!(summary["server_errors"], 0);
    assert!(summary["schemathesis_cases"].is_null());

    // The page as written, plus the measuring script.
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        !page.contains("<script>window.injected"),
        "case text escaped"
    );
    let checked = out.join("checked.html");
    std::fs::write(
        &checked,
        page.replace("</body>", &format!("{CHECK_SCRIPT}</body>")),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", checked.display());
    let dom = run_chromium(
        &url,
        &["--dump-dom".into(), "--window-size=1280,1600".into()],
        profile.path(),
    );
    let start = dom
        .find("<pre id=\"layout-check\">")
        .expect("the check ran")
        + 23;
    let end = start + dom[start..].find("</pre>").unwrap();
    let check: Value = serde_json::from_str(&html_unescape(&dom[start..end])).unwrap();
    eprintln!("{check:#}");

    assert_eq!(check["width"], 1280);
    assert_eq!(check["overflowing"], serde_json::json!([]), "{check:#}");
    assert!(check["documentWidth"].as_u64().unwrap() <= 1280);
    assert_eq!(check["externalAssets"], 0);
    assert_eq!(check["injected"], false, "case text ran as a script");
    assert_eq!(check["banner"], "1 of 4 cases passed, 1 failed, 2 skipped");
    let figures = &check["figures"];
    assert_eq!(figures["requests_lost"], "3");
    assert_eq!(figures["acknowledged_lost"], "0");
    assert_eq!(figures["server_errors"], "0");
    assert_eq!(figures["peak_rss_bytes"], "50.0 MiB");
    assert_eq!(figures["recovery_ms"], "1,234 ms");
    assert_eq!(figures["links_counted"], "306");
    assert_eq!(figures["schemathesis_cases"], "not measured");
    assert_eq!(
        check["sources"]["peak_rss_bytes"], "(overload_at_ten_times_the_knee_sheds_with_429)",
        "the largest-of figures name their case"
    );
    let rows = check["rows"].as_array().unwrap();
    let verdicts: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["case"].as_str().unwrap(), r["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        verdicts,
        [
            (
                "lifecycle_kill9_during_creates_loses_no_acknowledged_link_even_with_a_very_long_name_that_does_not_break",
                "passed"
            ),
            ("overload_at_ten_times_the_knee_sheds_with_429", "failed"),
            ("faults_redis_stopped_keeps_redirects", "skipped"),
            ("fuzz", "skipped"),
        ]
    );
    assert!(
        rows[0]["tried"]
            .as_str()
            .unwrap()
            .contains("<script>window.injected = 1</script>"),
        "the text is shown as text: {}",
        rows[0]["tried"]
    );
    assert!(
        rows[3]["tried"]
            .as_str()
            .unwrap()
            .contains("no nightly toolchain")
    );

    // The verdict badges are drawn in their colours (the page as written, no script).
    let shot = out.join("shot.png");
    run_chromium(
        &format!("file://{}", out.join("index.html").display()),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400".into(),
        ],
        profile.path(),
    );
    let img = decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!((img.width, img.height), (1280, 1400));
    let count = |rgb: [u8; 3]| {
        img.rgb
            .iter()
            .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 8))
            .count()
    };
    let (green, red, amber) = (
        count([0x1a, 0x7f, 0x37]),
        count([0xcf, 0x22, 0x2e]),
        count([0x9a, 0x67, 0x00]),
    );
    eprintln!("badge pixels: {green} green, {red} red, {amber} amber");
    assert!(
        green > 300 && red > 300 && amber > 600,
        "verdict badges drawn"
    );
}

/// What `scripts/test.sh` keeps: cargo's and libtest's output with `--show-output`.
const WORKSPACE_LOG: &str = r#"# linkr test log: state=x args=
   Compiling linkr v0.1.0 (/work/main/service)
     Running tests/other.rs (target/debug/deps/other-1)

running 1 test
test not_a_case ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/reliability_a.rs (target/debug/deps/reliability_a-2)

running 3 tests
test area_one ... ok
test area_three ... ignored, needs a database
test area_two ... FAILED

successes:

---- area_one stdout ----
RELIABILITY {"case":"area_one","tried":"one","figures":{"requests_lost":0,"recovery_ms":40}}


successes:
    area_one

failures:

---- area_two stdout ----
RELIABILITY {"case":"area_two","tried":"two","figures":{"acknowledged_lost":1}}
thread 'area_two' panicked at service/tests/reliability_a.rs:9:5

failures:
    area_two

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s

error: test failed, to rerun pass `-p linkr --test reliability_a`
"#;

#[test]
fn reliability_summary_reads_the_test_stages_log_with_show_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    std::fs::create_dir_all(out.join("logs")).unwrap();
    let log = out.join("workspace-tests.log");
    std::fs::write(&log, WORKSPACE_LOG).unwrap();
    let split = Command::new("python3")
        .arg(script())
        .arg("split-log")
        .arg(&log)
        .arg(out.join("logs"))
        .output()
        .expect("python3 runs");
    assert!(split.status.success());
    assert_eq!(
        String::from_utf8(split.stdout).unwrap(),
        "reliability_a\t1\n",
        "one reliability binary, failed"
    );
    std::fs::write(
        out.join("runs.tsv"),
        format!(
            "service/tests/reliability_a.rs\t{}\t1\t0\tscripts/test.sh\n",
            out.join("logs/reliability_a.log").display()
        ),
    )
    .unwrap();
    std::fs::write(out.join("parts.tsv"), "").unwrap();
    let status = Command::new("python3")
        .arg(script())
        .args(["summarize", "--out"])
        .arg(out)
        .arg("--runs")
        .arg(out.join("runs.tsv"))
        .arg("--parts-runs")
        .arg(out.join("parts.tsv"))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let cases: Vec<(&str, &str, &str)> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap(),
                c["verdict"].as_str().unwrap(),
                c["tried"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cases,
        [
            ("area_one", "passed", "one"),
            (
                "area_three",
                "skipped",
                "(the test printed no RELIABILITY line)"
            ),
            ("area_two", "failed", "two"),
        ]
    );
    assert_eq!(summary["results"][1]["reason"], "ignored: needs a database");
    assert_eq!(summary["acknowledged_lost"], 1);
    assert_eq!(summary["requests_lost"], 0);
    assert_eq!(summary["recovery_ms"], 40);
    assert!(summary["server_errors"].is_null(), "not measured");
}

/// The schemathesis part's 5xx count (`reliability.py server-errors`, run by
/// `scripts/schemathesis.sh` on linkr's access log). The log is the one that failed CI once: a
/// startup poll answered 503 by the starting app but logged with a start after `ready`. Only the
/// lines after the first `/readyz` 200 are the client's; a 5xx among them is counted.
#[test]
fn schemathesis_5xx_count_skips_the_startup_polls_and_counts_the_client_s() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("linkr.log");
    let line = |t: &str, route: &str, status: u16, latency: u32| {
        format!(
            r#"{{"timestamp":"2026-12-02T16:28:{t}Z","level":"INFO","message":"request","method":"GET","route":"{route}","status":{status},"latency_us":{latency},"target":"linkr::access"}}"#
        )
    };
    let lines = [
        line("09.790000", "/readyz", 503, 250),
        r#"{"timestamp":"2026-12-02T16:28:09.801048Z","level":"INFO","message":"ready","links":0}"#
            .to_string(),
        // started (end - latency) after `ready`, yet one of the script's polls
        line("09.801500", "/readyz", 503, 100),
        "not json".to_string(),
        line("09.905000", "/readyz", 200, 400),
        line("09.917000", "/readyz", 200, 300),
        line("09.918000", "/api/v1/links", 201, 900),
        line("09.919000", "/api/v1/links/{code}", 500, 700),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = Command::new("python3")
        .arg(script())
        .arg("server-errors")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let counted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counted["requests"], 3, "{counted}");
    assert_eq!(counted["server_errors"], 1, "{counted}");
    let shown = counted["server_error_lines"][0].as_str().unwrap();
    assert!(shown.contains(r#""status":500"#), "{shown}");
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(
        told.starts_with("a 5xx in the access log: ") && told.contains(r#""status":500"#),
        "{told}"
    );
}
