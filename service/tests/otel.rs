//! OpenTelemetry end to end (`cargo test -p linkr --features otel --test otel`): linkr runs as
//! a child process exporting OTLP/HTTP to a collector in this test. Requests carry a W3C
//! `traceparent`; after SIGTERM (which flushes the exporter) the exported spans must be in that
//! trace, with the request span a child of the caller's span and the store call a child of the
//! request span, and the access log lines must carry the trace id.
#![cfg(feature = "otel")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::Notify;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CREATE_PARENT: &str = "00f067aa0ba902b7";
const REDIRECT_PARENT: &str = "00f067aa0ba902b8";
const KEY: &str = "alice-key-0123456789";

/// The parts of the OTLP trace protobuf (opentelemetry/proto/trace/v1) this test reads.
#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

/// `AnyValue` is a oneof; on the wire its string case is field 1.
#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(string, optional, tag = "1")]
    string_value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
}

const SPAN_KIND_SERVER: i32 = 2;

#[derive(Debug, Clone)]
struct Exported {
    service_name: Option<String>,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
}

#[derive(Default)]
struct Collector {
    spans: Mutex<Vec<Exported>>,
    arrived: Notify,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.string_value.clone())
}

async fn collect(
    State(collector): State<Arc<Collector>>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            Vec::new(),
        );
    };
    let mut spans = collector.spans.lock().unwrap();
    for rs in &request.resource_spans {
        let service_name = rs
            .resource
            .as_ref()
            .and_then(|r| string_attr(&r.attributes, "service.name"));
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            spans.push(Exported {
                service_name: service_name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name.clone(),
                kind: span.kind,
            });
        }
    }
    drop(spans);
    collector.arrived.notify_waiters();
    // An empty ExportTraceServiceResponse.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::new(),
    )
}

/// Kills the child if the test fails before it exits.
struct Linkr {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Linkr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `CARGO_BIN_EXE_linkr` is `target/<profile>/linkr`, which any build of linkr in the same
/// target directory replaces: make sure it is the `otel` build (its config has the ratio).
fn assert_otel_binary(data_dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_linkr"))
        .env_clear()
        .env("LINKR_DATA_DIR", data_dir)
        .arg("--print-config")
        .output()
        .expect("linkr --print-config runs");
    let config: Value = serde_json::from_slice(&out.stdout).expect("--print-config prints JSON");
    assert!(
        config.get("trace_sample_ratio").is_some(),
        "{} was built without the otel feature (another build in the same target directory \
         replaced it); run `cargo test -p linkr --features otel --test otel` again",
        env!("CARGO_BIN_EXE_linkr")
    );
}

fn spawn_linkr(data_dir: &std::path::Path, otlp_endpoint: &str) -> (Linkr, String) {
    assert_otel_binary(data_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkr"))
        .env_clear()
        .env("LINKR_ADDR", "127.0.0.1:0")
        .env("LINKR_ADMIN_ADDR", "127.0.0.1:0")
        .env("LINKR_DATA_DIR", data_dir)
        .env("LINKR_API_KEYS", format!("alice:{KEY}"))
        .env("LINKR_SHUTDOWN_DELAY", "0s")
        .env("LINKR_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("linkr starts");
    let stdout = child.stdout.take().unwrap();
    let linkr = Linkr {
        child,
        lines: Arc::default(),
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn({
        let lines = linkr.lines.clone();
        move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("linkr logged its listening addresses");
        if let Ok(event) = serde_json::from_str::<Value>(&line)
            && let Some(main) = event["main_addr"].as_str()
        {
            return (linkr, format!("http://{main}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_in_the_callers_trace() {
    let collector = Arc::new(Collector::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(
            listener,
            Router::new()
                .route("/v1/traces", post(collect))
                .with_state(collector.clone())
                .into_make_service(),
        )
        .into_future(),
    );

    let dir = tempfile::tempdir().unwrap();
    let (mut linkr, base) = tokio::task::spawn_blocking({
        let data = dir.path().to_path_buf();
        move || spawn_linkr(&data, &otlp)
    })
    .await
    .unwrap();

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/startupz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "linkr never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let created = client
        .post(format!("{base}/v1/links"))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{TRACE_ID}-{CREATE_PARENT}-01"))
        .json(&json!({ "url": "https://example.com/traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let code = created.json::<Value>().await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let redirect = client
        .get(format!("{base}/{code}"))
        .header("traceparent", format!("00-{TRACE_ID}-{REDIRECT_PARENT}-01"))
        .send()
        .await
        .unwrap();
    assert!(redirect.status().is_redirection(), "{}", redirect.status());

    // SIGTERM: graceful shutdown ends with the exporter's flush.
    let pid = i32::try_from(linkr.child.id()).unwrap();
    // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = linkr.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "linkr did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");

    // The flush completed before the exit, but wait (bounded) for the collector to have it.
    let in_trace = |name: &str| {
        collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.trace_id == TRACE_ID && s.name == name)
            .cloned()
    };
    let wait_for = async {
        loop {
            let arrived = collector.arrived.notified();
            if ["POST /v1/links", "store.create", "GET /{code}"]
                .iter()
                .all(|n| in_trace(n).is_some())
            {
                return;
            }
            arrived.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait_for)
        .await
        .is_err()
    {
        panic!(
            "spans of trace {TRACE_ID} missing; exported: {:#?}",
            collector.spans.lock().unwrap()
        );
    }
    server.abort();

    let create = in_trace("POST /v1/links").unwrap();
    assert_eq!(create.parent_span_id, CREATE_PARENT, "{create:?}");
    assert_eq!(create.kind, SPAN_KIND_SERVER, "{create:?}");
    assert_eq!(create.service_name.as_deref(), Some("linkr"), "{create:?}");
    let store = in_trace("store.create").unwrap();
    assert_eq!(
        store.parent_span_id, create.span_id,
        "{store:?} under {create:?}"
    );
    let redirect = in_trace("GET /{code}").unwrap();
    assert_eq!(redirect.parent_span_id, REDIRECT_PARENT, "{redirect:?}");
    let redirect_children = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.parent_span_id == redirect.span_id)
        .count();
    assert_eq!(redirect_children, 0, "a redirect is one span");

    let lines = linkr.lines.lock().unwrap().clone();
    let access: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "linkr::access")
        .collect();
    for (method, route) in [("POST", "/v1/links"), ("GET", "/{code}")] {
        let line = access
            .iter()
            .find(|e| e["method"] == method && e["route"] == route)
            .unwrap_or_else(|| panic!("no access line for {method} {route}: {lines:#?}"));
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    }
    // Requests without a traceparent start their own trace, also logged.
    let probe = access
        .iter()
        .find(|e| e["route"] == "/startupz")
        .expect("an access line for /startupz");
    let own = probe["trace_id"].as_str().unwrap_or_default();
    assert!(
        own.len() == 32 && own != TRACE_ID && own.bytes().all(|b| b.is_ascii_hexdigit()),
        "{probe}"
    );
}
