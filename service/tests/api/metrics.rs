//! The metrics' list of known routes against the routes linkr serves.

use linkr::metrics::KNOWN_ROUTES;

use crate::helpers::{ALICE, spawn_app};

/// Sum of `metric`'s samples whose labels include every `label="value"` of `labels`.
fn sum(text: &str, metric: &str, labels: &[String]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_known_route_and_method_is_one_linkr_serves() {
    let app = spawn_app().await;
    for known in KNOWN_ROUTES {
        for method in known.methods {
            let path = known.pattern.replace("{code}", "nosuchcode");
            let response = app
                .client
                .request(method.parse().unwrap(), app.url(&path))
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            assert_ne!(response.status(), 405, "{method} {path}");
        }
    }
    let text = app
        .client
        .get(format!("http://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for known in KNOWN_ROUTES {
        for method in known.methods {
            let labels = [
                format!("route=\"{}\"", known.pattern),
                format!("method=\"{method}\""),
            ];
            // At least once: the start-up wait polls `/startupz` too.
            assert!(
                sum(&text, "linkr_http_requests_total", &labels) >= 1.0,
                "{method} {} was not counted under its pattern",
                known.pattern
            );
        }
    }
    let unmatched = ["route=\"unmatched\"".to_string()];
    assert_eq!(
        sum(&text, "linkr_http_requests_total", &unmatched),
        0.0,
        "a known route matched nothing:\n{text}"
    );
}
