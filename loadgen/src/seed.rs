//! Pre-creating the links the redirect and stats scenarios read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest013::header::{AUTHORIZATION, CONTENT_TYPE};

use crate::error::LoadgenError;
use crate::scenarios::{Scenario, Seeds, split_target};

/// Concurrent creates while seeding (linkr commits creates in groups: concurrency pays).
pub const SEED_CONCURRENCY: usize = 64;
/// Links seeded by default.
pub const DEFAULT_SEED_LINKS: usize = 10_000;

/// Creates `n` links on the linkr at `target` (`POST /v1/links` with `api_key`) and returns
/// their codes, in creation order. Fails on the first non-201 answer.
pub async fn seed_links(target: &str, api_key: &str, n: usize) -> Result<Seeds, LoadgenError> {
    let (origin, _) = split_target(target)?;
    let url: Arc<str> = format!("{origin}/v1/links").into();
    let auth: Arc<str> = format!("Bearer {api_key}").into();
    let client = reqwest013::Client::builder()
        .no_proxy()
        .redirect(reqwest013::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SEED_CONCURRENCY.min(n.max(1)) {
        let (client, url, auth, next) = (client.clone(), url.clone(), auth.clone(), next.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, LoadgenError>(made);
                }
                let body = format!(r#"{{"url":"https://example.com/seed/{i}"}}"#);
                let resp = client
                    .post(&*url)
                    .header(AUTHORIZATION, &*auth)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| LoadgenError::Seed(format!("POST {url}: {e}")))?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.as_u16() != 201 {
                    return Err(LoadgenError::Seed(format!(
                        "POST {url} answered {status}: {text}"
                    )));
                }
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    LoadgenError::Seed(format!("POST {url}: bad JSON {text:?}: {e}"))
                })?;
                let code = v["code"]
                    .as_str()
                    .ok_or_else(|| LoadgenError::Seed(format!("POST {url}: no code in {text}")))?;
                made.push((i, code.to_string()));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(made)) => all.extend(made),
            Ok(Err(e)) => {
                tasks.abort_all();
                return Err(e);
            }
            Err(e) => return Err(LoadgenError::Seed(format!("seeding task failed: {e}"))),
        }
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(Seeds {
        codes: all.into_iter().map(|(_, c)| c).collect(),
    })
}

/// The links `scenario` reads, seeded on the linkr at `target` with `api_key`; none for a
/// scenario that reads none. A usage error when the scenario needs a key and there is none.
pub async fn seed_for(
    scenario: Scenario,
    target: &str,
    api_key: Option<&str>,
    n: usize,
) -> Result<Seeds, LoadgenError> {
    if !(scenario.needs_seeds() || scenario.needs_api_key()) {
        return Ok(Seeds::default());
    }
    let Some(key) = api_key else {
        return Err(LoadgenError::Usage(format!(
            "scenario {scenario} needs an API key against --target (--api-key or LINKR_API_KEY), or use --spawn"
        )));
    };
    if !scenario.needs_seeds() {
        return Ok(Seeds::default());
    }
    eprintln!("seeding {n} links");
    seed_links(target, key, n).await
}
