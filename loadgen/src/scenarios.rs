//! What each request of a step is, and how a goose user sends it.

use std::time::Duration;

use goose::goose::{GooseMethod, GooseRequest, GooseUser};
use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use reqwest013::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;

use crate::error::LoadgenError;
use crate::stats::Outcome;

/// The request mix of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `GET /{code}` over the seeded links, Zipf-skewed popularity (hot set); expects 302.
    Redirect,
    /// `POST /v1/links` with the API key; expects 201.
    Create,
    /// `GET /v1/links/{code}` with the API key, Zipf-skewed; expects 200.
    Stats,
    /// 90% redirect, 5% create, 5% stats (by slot: exact proportions).
    #[default]
    Mixed,
    /// A plain `GET` of the target URL's path, for any HTTP server; any status below 400 passes.
    Get,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Redirect => "redirect",
            Scenario::Create => "create",
            Scenario::Stats => "stats",
            Scenario::Mixed => "mixed",
            Scenario::Get => "get",
        }
    }

    /// Whether the scenario reads pre-created links.
    pub fn needs_seeds(self) -> bool {
        matches!(self, Scenario::Redirect | Scenario::Stats | Scenario::Mixed)
    }

    /// Whether the scenario sends authenticated requests.
    pub fn needs_api_key(self) -> bool {
        matches!(self, Scenario::Create | Scenario::Stats | Scenario::Mixed)
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Links pre-created for the redirect and stats requests.
#[derive(Debug, Clone, Default)]
pub struct Seeds {
    pub codes: Vec<String>,
}

/// Zipf exponent of link popularity: with 10,000 links the top link draws ~10% of the requests
/// and the top 100 about half.
pub const ZIPF_EXPONENT: f64 = 1.0;

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Redirect(usize),
    Create,
    Stats(usize),
    Get,
}

impl Op {
    /// The HTTP method, for goose's report.
    pub fn method(self) -> &'static str {
        match self {
            Op::Create => "POST",
            _ => "GET",
        }
    }

    /// The request's name in goose's report (its path pattern).
    pub fn name(self) -> &'static str {
        match self {
            Op::Redirect(_) => "/{code}",
            Op::Create => "/v1/links",
            Op::Stats(_) => "/v1/links/{code}",
            Op::Get => "target",
        }
    }
}

/// A step's requests, prepared once: paths and headers are built before the step so a request
/// allocates nothing of ours.
pub struct Plan {
    scenario: Scenario,
    redirect_paths: Vec<String>,
    stats_paths: Vec<String>,
    popularity: Option<Zipf<f64>>,
    get_path: String,
    auth: Option<HeaderValue>,
    json: HeaderValue,
}

/// A target URL split into goose's host (scheme, host, port) and the path a `get` requests.
pub fn split_target(target: &str) -> Result<(String, String), LoadgenError> {
    let url = reqwest013::Url::parse(target)
        .map_err(|e| LoadgenError::Usage(format!("invalid target URL {target:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(LoadgenError::Usage(format!(
            "invalid target URL {target:?}: expected http://host[:port][/path]"
        )));
    }
    let mut origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        origin.push_str(&format!(":{port}"));
    }
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok((origin, path))
}

impl Plan {
    pub fn new(
        scenario: Scenario,
        target: &str,
        api_key: Option<&str>,
        seeds: &Seeds,
    ) -> Result<Self, LoadgenError> {
        let (_, get_path) = split_target(target)?;
        if scenario.needs_seeds() && seeds.codes.is_empty() {
            return Err(LoadgenError::Usage(format!(
                "scenario {scenario} needs links to read: pass --api-key (or LINKR_API_KEY) so the generator seeds them, or use --spawn"
            )));
        }
        let auth =
            match api_key {
                Some(key) => Some(HeaderValue::from_str(&format!("Bearer {key}")).map_err(
                    |_| LoadgenError::Usage("the API key is not a valid header value".into()),
                )?),
                None if scenario.needs_api_key() => {
                    return Err(LoadgenError::Usage(format!(
                        "scenario {scenario} needs an API key: --api-key KEY or LINKR_API_KEY"
                    )));
                }
                None => None,
            };
        let popularity = (!seeds.codes.is_empty())
            .then(|| Zipf::new(seeds.codes.len() as f64, ZIPF_EXPONENT).expect("n >= 1, s >= 0"));
        Ok(Self {
            scenario,
            redirect_paths: seeds.codes.iter().map(|c| format!("/{c}")).collect(),
            stats_paths: seeds
                .codes
                .iter()
                .map(|c| format!("/v1/links/{c}"))
                .collect(),
            popularity,
            get_path,
            auth,
            json: HeaderValue::from_static("application/json"),
        })
    }

    /// `/{code}` for each seeded link.
    pub fn redirect_paths(&self) -> &[String] {
        &self.redirect_paths
    }

    /// `/v1/links/{code}` for each seeded link.
    pub fn stats_paths(&self) -> &[String] {
        &self.stats_paths
    }

    /// The path (and query) a `get` requests.
    pub fn get_path(&self) -> &str {
        &self.get_path
    }

    /// `Bearer KEY`, when an API key was given.
    pub fn auth(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    fn popular(&self, rng: &mut SmallRng) -> usize {
        match &self.popularity {
            Some(z) => {
                let rank: f64 = z.sample(rng);
                (rank as usize)
                    .saturating_sub(1)
                    .min(self.redirect_paths.len() - 1)
            }
            None => 0,
        }
    }

    /// The request for slot `slot`.
    pub fn pick(&self, rng: &mut SmallRng, slot: u64) -> Op {
        match self.scenario {
            Scenario::Redirect => Op::Redirect(self.popular(rng)),
            Scenario::Stats => Op::Stats(self.popular(rng)),
            Scenario::Create => Op::Create,
            Scenario::Get => Op::Get,
            Scenario::Mixed => match slot % 20 {
                0 => Op::Create,
                10 => Op::Stats(self.popular(rng)),
                _ => Op::Redirect(self.popular(rng)),
            },
        }
    }

    /// Sends `op` through goose's user (its client does not follow redirects) and reads the whole
    /// response body, so the connection goes back to the pool.
    pub async fn send(
        &self,
        user: &mut GooseUser,
        op: Op,
        slot: u64,
        rng: &mut SmallRng,
    ) -> Outcome {
        let request = match self.build(user, op, slot, rng) {
            Ok(r) => r,
            Err(_) => return Outcome::Other,
        };
        let response = match user.request(request).await {
            Ok(goose) => goose.response,
            Err(_) => return Outcome::Other,
        };
        match response {
            Ok(resp) => {
                let code = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(_) => Outcome::Status {
                        code,
                        ok: expected(op, code),
                    },
                    Err(e) => classify(&e),
                }
            }
            Err(e) => classify(&e),
        }
    }

    fn build<'a>(
        &'a self,
        user: &GooseUser,
        op: Op,
        slot: u64,
        rng: &mut SmallRng,
    ) -> Result<GooseRequest<'a>, Box<goose::goose::TransactionError>> {
        Ok(match op {
            Op::Redirect(k) => GooseRequest::builder()
                .path(self.redirect_paths[k].as_str())
                .name("GET /{code}")
                .expect_status_code(302)
                .build(),
            Op::Get => GooseRequest::builder()
                .path(self.get_path.as_str())
                .name("GET")
                .build(),
            Op::Stats(k) => {
                let rb = user
                    .get_request_builder(&GooseMethod::Get, &self.stats_paths[k])?
                    .header(
                        AUTHORIZATION,
                        self.auth.clone().unwrap_or(HeaderValue::from_static("")),
                    );
                GooseRequest::builder()
                    .set_request_builder(rb)
                    .name("GET /v1/links/{code}")
                    .expect_status_code(200)
                    .build()
            }
            Op::Create => {
                let body = format!(
                    r#"{{"url":"https://example.com/loadgen/{slot}/{:08x}"}}"#,
                    rng.random::<u32>()
                );
                let rb = user
                    .get_request_builder(&GooseMethod::Post, "/v1/links")?
                    .header(
                        AUTHORIZATION,
                        self.auth.clone().unwrap_or(HeaderValue::from_static("")),
                    )
                    .header(CONTENT_TYPE, self.json.clone())
                    .body(body);
                GooseRequest::builder()
                    .set_request_builder(rb)
                    .method(GooseMethod::Post)
                    .name("POST /v1/links")
                    .expect_status_code(201)
                    .build()
            }
        })
    }
}

/// Whether `code` is the answer `op` expects.
pub fn expected(op: Op, code: u16) -> bool {
    match op {
        Op::Redirect(_) => code == 302,
        Op::Create => code == 201,
        Op::Stats(_) => code == 200,
        Op::Get => code < 400,
    }
}

fn classify(e: &reqwest013::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Other
    }
}

/// Per-request timeout of the generator's client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The client the steps run from this thread share, built on first use: one connection pool, so
/// the connections of a step are reused by the next (a knee search opens them once, and does
/// not leave thousands in TIME_WAIT between steps). Per thread, as a connection belongs to the
/// runtime that opened it: `run_step` is normally driven from the thread that blocks on the
/// runtime.
pub fn shared_client() -> Result<reqwest013::Client, LoadgenError> {
    thread_local! {
        static CLIENT: std::cell::OnceCell<reqwest013::Client> = const { std::cell::OnceCell::new() };
    }
    CLIENT.with(|c| {
        if let Some(client) = c.get() {
            return Ok(client.clone());
        }
        let client = client()?;
        Ok(c.get_or_init(|| client).clone())
    })
}

/// A client for the generator: no redirects followed (a 302 is the answer), no proxy, no gzip,
/// HTTP/1.1.
pub fn client() -> Result<reqwest013::Client, LoadgenError> {
    Ok(reqwest013::Client::builder()
        .redirect(reqwest013::redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("linkr-loadgen/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn seeds(n: usize) -> Seeds {
        Seeds {
            codes: (0..n).map(|i| format!("c{i}")).collect(),
        }
    }

    #[test]
    fn mixed_is_90_5_5() {
        let plan = Plan::new(
            Scenario::Mixed,
            "http://127.0.0.1:1",
            Some("k"),
            &seeds(100),
        )
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let (mut r, mut c, mut s) = (0, 0, 0);
        for slot in 0..2000 {
            match plan.pick(&mut rng, slot) {
                Op::Redirect(_) => r += 1,
                Op::Create => c += 1,
                Op::Stats(_) => s += 1,
                Op::Get => unreachable!(),
            }
        }
        assert_eq!((r, c, s), (1800, 100, 100));
    }

    #[test]
    fn popularity_is_skewed() {
        let plan = Plan::new(
            Scenario::Redirect,
            "http://127.0.0.1:1",
            None,
            &seeds(10_000),
        )
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut hits = vec![0u32; 10_000];
        for slot in 0..100_000 {
            let Op::Redirect(k) = plan.pick(&mut rng, slot) else {
                unreachable!()
            };
            hits[k] += 1;
        }
        let top100: u32 = hits[..100].iter().sum();
        assert!(hits[0] > 5_000, "top link {}", hits[0]);
        assert!(top100 > 40_000 && top100 < 70_000, "top 100 links {top100}");
    }

    #[test]
    fn missing_seeds_or_key_is_a_usage_error() {
        let e = Plan::new(Scenario::Redirect, "http://h:1", None, &Seeds::default())
            .err()
            .unwrap();
        assert!(matches!(e, LoadgenError::Usage(_)));
        let e = Plan::new(Scenario::Create, "http://h:1", None, &Seeds::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("API key"), "{e}");
        assert!(Plan::new(Scenario::Get, "http://h:1/x", None, &Seeds::default()).is_ok());
    }

    #[test]
    fn target_is_split_into_host_and_path() {
        assert_eq!(
            split_target("http://127.0.0.1:8080/healthz?x=1").unwrap(),
            (
                "http://127.0.0.1:8080".to_string(),
                "/healthz?x=1".to_string()
            )
        );
        assert_eq!(
            split_target("http://h").unwrap(),
            ("http://h".to_string(), "/".to_string())
        );
        assert!(split_target("ftp://h").is_err());
        assert!(split_target("nope").is_err());
    }
}
