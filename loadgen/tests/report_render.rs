//! The knee report renders from synthetic results: files, sections, escaping, offline.

mod report_fixture;

#[test]
fn report_has_every_section_and_is_offline() {
    let dir = tempfile::tempdir().unwrap();
    let report = report_fixture::write_synthetic_report(dir.path());
    for f in [
        "index.html",
        "flamegraph.svg",
        "flamegraph-diff.svg",
        "cpu.folded",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    for id in [
        "summary",
        "curve",
        "distribution",
        "profile",
        "steps",
        "bound",
        "allocations",
        "environment",
        "links",
    ] {
        assert!(
            html.contains(&format!(r#"<section id="{id}">"#)),
            "section {id} missing"
        );
    }
    // the two charts are inline SVG with both series and the knee marked
    assert_eq!(html.matches(r#"<svg class="chart""#).count(), 2);
    assert!(html.contains(r#"class="knee""#));
    assert!(
        html.matches(r#"class="corrected""#).count() >= 2
            && html.matches(r#"class="uncorrected""#).count() >= 2
    );
    // flamegraphs embedded, sized from the SVG
    assert!(html.contains(r#"<object class="flamegraph" data="flamegraph.svg""#));
    assert!(html.contains(r#"data="flamegraph-diff.svg""#));
    // one table row per step, corrected and uncorrected p50..max
    // two rows per step: outcome, latency percentiles
    assert_eq!(
        html.matches("<tr><td>").count() + html.matches(r#"<tr class="knee"><td>"#).count(),
        2 * report.steps.len()
    );
    for h in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        assert_eq!(html.matches(&format!(">{h}</th>")).count(), 2, "{h} header");
    }
    assert!(html.contains("(knee)"));
    assert!(html.contains("step-01-2000.hgrm") && html.contains("goose/step-01-2000.html"));
    assert!(html.contains("../bench/index.html"));
    assert!(html.contains("What bound the knee: service"));
    assert!(html.contains("<code>/{code}</code>") && html.contains("14.20"));
    assert!(html.contains("CPU") && html.contains("git commit") && html.contains("allocator"));
    // escaping: nothing interpolated can open a tag
    assert!(
        !html.contains("<script>alert(1)</script>")
            && html.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert!(html.contains("?q=&lt;b&gt;&amp;x=&quot;y&quot;"));
    // offline: no fetch from anywhere but this directory
    for needle in ["http://", "https://", "//cdn", "<script", "<link"] {
        let offending: Vec<&str> = html
            .match_indices(needle)
            .map(|(i, _)| &html[i.saturating_sub(40)..(i + 60).min(html.len())])
            .filter(|ctx| {
                !ctx.contains("xmlns=\"http://www.w3.org/2000/svg\"")
                    && !ctx.contains("127.0.0.1:8080")
            })
            .collect();
        assert!(
            offending.is_empty(),
            "{needle} in index.html: {offending:?}"
        );
    }
}

#[test]
fn report_without_knee_or_profile_still_renders() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = report_fixture::write_synthetic_report(dir.path());
    report.knee = None;
    report.steps.iter_mut().for_each(|s| s.pass = false);
    report.profile = linkr_loadgen::report::ProfileView::Skipped {
        reason: "no admin listener known (--target without --admin)".into(),
    };
    report.allocations = Default::default();
    report.goose_reports.clear();
    report.bench_report = None;
    linkr_loadgen::report::write_html(dir.path(), &report).unwrap();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("No step passed"));
    assert!(html.contains("Profile skipped: no admin listener known"));
    assert!(!html.contains("<object"));
    assert!(html.contains("goose per-step reports were not written"));
    assert_eq!(
        html.matches(r#"<svg class="chart""#).count(),
        1,
        "curve drawn, no distribution without a knee"
    );
}
