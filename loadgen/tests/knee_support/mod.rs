//! What the knee tests share: an in-test HTTP server on its own thread and single-threaded
//! runtime (so the generator under test does not share its runtime's workers with the server),
//! and `loadgen knee` run in-process from its command-line flags.
#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use clap::Parser;
use linkr_loadgen::cli::KneeArgs;
use linkr_loadgen::knee::{self, Outcome, Target};
use tokio::sync::oneshot;

/// Serves `app` on 127.0.0.1 from a thread named `name`; the listener is bound before this
/// returns, so the server is ready.
pub fn serve(name: &str, app: Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        })
        .unwrap();
    addr
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    knee: KneeArgs,
}

/// `loadgen knee --target TARGET FLAGS...` against a running server (with `--admin` when the
/// flags give it).
pub async fn run_knee(target: &str, flags: &[&str]) -> Outcome {
    let mut args = vec!["knee", "--target", target];
    args.extend_from_slice(flags);
    let cli = Cli::try_parse_from(args).expect("valid knee flags");
    let target = Target {
        base_url: target.to_owned(),
        admin_url: cli.knee.admin.clone(),
        api_key: None,
        service: Default::default(),
    };
    knee::run_against(&cli.knee, target)
        .await
        .expect("knee run")
}

type Job = (Instant, oneshot::Sender<()>);

/// A server of known capacity: one worker thread serves `GET /work` requests one at a time,
/// `service` each (capacity 1/`service`), behind as many connections as clients open.
pub fn one_worker(name: &str, service: Duration) -> SocketAddr {
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("{name}-worker"))
        .spawn(move || {
            let mut free_at = Instant::now();
            for (arrived, reply) in queue {
                let done = arrived.max(free_at) + service;
                free_at = done;
                let now = Instant::now();
                if done > now {
                    std::thread::sleep(done - now);
                }
                let _ = reply.send(());
            }
        })
        .unwrap();
    serve(
        name,
        Router::new().route("/work", get(queued)).with_state(jobs),
    )
}

async fn queued(State(jobs): State<mpsc::Sender<Job>>) -> &'static str {
    let (tx, rx) = oneshot::channel();
    jobs.send((Instant::now(), tx)).expect("worker alive");
    rx.await.expect("worker replies");
    "done"
}
