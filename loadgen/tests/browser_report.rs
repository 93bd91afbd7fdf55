//! Renders the knee report in headless Chromium: the screenshot is not blank, the inline SVG
//! charts are in the rendered DOM, and the embedded flamegraph draws its frames.
//!
//! Chromium is required (CI installs it with scripts/install-chromium.sh): a missing browser fails
//! the test instead of skipping it.

mod browser_support;
mod report_fixture;

use std::collections::HashSet;
use std::path::Path;

use browser_support::{decode_png, is_saturated, run_chromium};

#[test]
fn report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    report_fixture::write_synthetic_report(dir.path());
    let index = dir.path().join("index.html");
    let url = format!("file://{}", index.display());
    let shot = dir.path().join("screenshot.png");
    let profile = tempfile::tempdir().unwrap();

    run_chromium(
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,4200".into(),
        ],
        profile.path(),
    );
    let bytes = std::fs::read(&shot).expect("chromium wrote the screenshot");
    let img = decode_png(&bytes);
    assert_eq!((img.width, img.height), (1280, 4200));
    // KEEP_SCREENSHOT=path.png keeps the screenshot, KEEP_REPORT_DIR=dir the report (to look at).
    if let Ok(keep) = std::env::var("KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    if let Ok(keep) = std::env::var("KEEP_REPORT_DIR") {
        report_fixture::write_synthetic_report(Path::new(&keep));
    }

    let colours: HashSet<[u8; 3]> = img.rgb.iter().copied().collect();
    let non_white = img
        .rgb
        .iter()
        .filter(|p| p.iter().any(|c| *c < 235))
        .count();
    let saturated = img.rgb.iter().filter(|p| is_saturated(p)).count();
    let chart_blue = img
        .rgb
        .iter()
        .filter(|p| p[2] > 150 && p[0] < 80 && p[1] < 130)
        .count();
    assert!(
        colours.len() > 64,
        "screenshot nearly uniform: {} colours",
        colours.len()
    );
    assert!(
        non_white > img.rgb.len() / 20,
        "screenshot mostly blank: {non_white} non-white pixels"
    );
    assert!(
        chart_blue > 500,
        "charts' corrected series not visible: {chart_blue} blue pixels"
    );
    eprintln!(
        "screenshot: {} colours, {non_white} non-white, {chart_blue} chart blue, {saturated} saturated pixels",
        colours.len()
    );
    assert!(
        saturated > 60_000,
        "flamegraph frames not visible: only {saturated} strongly coloured pixels"
    );

    let dom = run_chromium(&url, &["--dump-dom".into()], profile.path());
    assert!(
        dom.contains("linkr knee report"),
        "DOM: {}",
        &dom[..dom.len().min(500)]
    );
    assert_eq!(
        dom.matches("<svg class=\"chart\"").count(),
        2,
        "both inline charts in the DOM"
    );
    assert!(dom.contains("<path class=\"corrected\""));
    assert!(dom.contains("<object class=\"flamegraph\""));

    // The flamegraph on its own renders too (inferno's interactive SVG).
    let flame_shot = dir.path().join("flame.png");
    run_chromium(
        &format!("file://{}", dir.path().join("flamegraph.svg").display()),
        &[
            format!("--screenshot={}", flame_shot.display()),
            "--window-size=1200,500".into(),
        ],
        profile.path(),
    );
    let flame_img = decode_png(&std::fs::read(&flame_shot).unwrap());
    let saturated = flame_img.rgb.iter().filter(|p| is_saturated(p)).count();
    eprintln!("flamegraph.svg: {saturated} saturated pixels");
    assert!(
        saturated > 40_000,
        "flamegraph.svg renders blank: {saturated} strongly coloured pixels"
    );
}
