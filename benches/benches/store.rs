//! The embedded store: redirect lookups (memory) and durable creates (fsync'd, group commit).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkr::clock::Clock;
use linkr::domain::TargetUrl;
use linkr::store::{Lookup, NewLink, Store, StoreConfig};
use linkr_benches::support::{self, Group};
use tokio::task::JoinSet;

/// Links loaded before measuring lookups.
const LINKS: usize = 10_000;
/// Hot set the redirect benches rotate through.
const HOT: usize = 1024;

fn new_link(owner: &Arc<str>, i: usize) -> NewLink {
    NewLink {
        url: TargetUrl::parse(&format!("https://www.example.com/articles/{i}?ref=bench"))
            .expect("valid url"),
        code: None,
        owner: owner.clone(),
        ttl_seconds: None,
    }
}

async fn create_concurrently(store: &Store, owner: &Arc<str>, n: usize) -> Vec<String> {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (store, link) = (store.clone(), new_link(owner, i));
        tasks.spawn(async move { store.create(link).await });
    }
    let mut codes = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        let info = done.expect("create task").expect("create");
        codes.push(info.code.as_str().to_owned());
    }
    codes
}

fn store(c: &mut Criterion) {
    let rt = support::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path()), Clock::system()).expect("open store");
    let owner: Arc<str> = Arc::from("bench");
    let codes = rt.block_on(create_concurrently(&store, &owner, LINKS));
    let hot = &codes[..HOT];

    let mut g = Group::new(c, "store");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench("resolve/hit", || {
        i = (i + 1) % HOT;
        match store.resolve(black_box(&hot[i])) {
            Lookup::Found(location) => location,
            other => panic!("expected a hit, got {other:?}"),
        }
    });
    g.bench("resolve/miss", || store.resolve(black_box("nosuchcode")));
    let mut i = 0;
    g.bench("info/hit", || {
        i = (i + 1) % HOT;
        store.info(black_box(&hot[i])).expect("known code")
    });

    let mut n = 0;
    g.bench("create/durable", || {
        n += 1;
        rt.block_on(store.create(new_link(&owner, n)))
            .expect("create")
    });
    g.throughput(Throughput::Elements(16));
    g.criterion_group().sample_size(20);
    g.bench("create/durable_concurrent_x16", || {
        rt.block_on(create_concurrently(&store, &owner, 16))
    });
    g.finish();
    rt.block_on(store.close()).expect("close store");
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = store
}
criterion_main!(benches);
