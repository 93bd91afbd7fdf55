//! The deploy files (Dockerfile, compose.yaml, deploy/) cannot be run here (no container engine),
//! so this test parses them and checks what production relies on.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml_documents(relative: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(relative))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn yaml(relative: &str) -> Value {
    let mut docs = yaml_documents(relative);
    assert_eq!(docs.len(), 1, "{relative} should hold one YAML document");
    docs.remove(0)
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {value:?}"))
}

fn seq<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} should be a list, is {value:?}"))
}

/// "25s", "1m30s", "500ms" or a bare number of seconds.
fn seconds(value: &Value) -> f64 {
    if let Some(n) = value.as_f64() {
        return n;
    }
    let text = str_of(value, "duration").trim();
    if let Ok(n) = text.parse::<f64>() {
        return n;
    }
    let (mut total, mut number) = (0.0, String::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&next) = chars.peek().filter(|n| n.is_ascii_alphabetic()) {
            unit.push(next);
            chars.next();
        }
        let scale = match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => panic!("unknown duration unit {other:?} in {text:?}"),
        };
        total += number.parse::<f64>().expect("duration number") * scale;
        number.clear();
    }
    assert!(number.is_empty(), "duration {text:?} lacks a unit");
    total
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().expect("port")
}

/// Compose `environment:` as a mapping or as a list of `KEY=value`.
fn compose_env(service: &Value, key: &str) -> Option<String> {
    let env = &service["environment"];
    if let Some(map) = env.as_mapping() {
        return map.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
        });
    }
    env.as_sequence()?.iter().find_map(|item| {
        let (k, v) = item.as_str()?.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

fn k8s_env<'a>(container: &'a Value, key: &str) -> &'a Value {
    seq(&container["env"], "container env")
        .iter()
        .find(|e| e["name"] == key)
        .map(|e| &e["value"])
        .unwrap_or_else(|| panic!("container env lacks {key}"))
}

#[test]
fn compose_runs_linkr_with_its_backends_and_prometheus_on_the_admin_port() {
    let compose = yaml("compose.yaml");
    let services = &compose["services"];
    for name in ["linkr", "postgres", "redis", "prometheus"] {
        assert!(services[name].is_mapping(), "compose lacks service {name}");
    }
    assert!(str_of(&services["postgres"]["image"], "postgres image").starts_with("postgres:16"));
    assert!(str_of(&services["redis"]["image"], "redis image").starts_with("redis:7"));

    let linkr = &services["linkr"];
    let admin_addr = compose_env(linkr, "LINKR_ADMIN_ADDR").expect("LINKR_ADMIN_ADDR");
    assert!(
        admin_addr.starts_with("0.0.0.0:"),
        "admin must bind all interfaces in a container"
    );
    let admin_port = port_of(&admin_addr);
    let main_port = port_of(&compose_env(linkr, "LINKR_ADDR").expect("LINKR_ADDR"));
    assert_ne!(admin_port, main_port);

    let keys_file = compose_env(linkr, "LINKR_API_KEYS_FILE").expect("keys come from a file");
    let secret = keys_file
        .strip_prefix("/run/secrets/")
        .expect("keys file is a compose secret");
    assert!(
        seq(&linkr["secrets"], "linkr secrets")
            .iter()
            .any(|s| s == secret)
    );
    assert!(
        compose["secrets"][secret]["file"].is_string(),
        "secret {secret} is not defined"
    );
    assert!(
        compose_env(linkr, "LINKR_API_KEYS").is_none(),
        "no keys inline in compose"
    );

    let timeout = compose_env(linkr, "LINKR_SHUTDOWN_TIMEOUT").map_or(25.0, |t| seconds(&t.into()));
    assert!(
        seconds(&linkr["stop_grace_period"]) > timeout,
        "stop_grace_period must exceed the shutdown timeout"
    );

    for (name, service) in services.as_mapping().unwrap() {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = str_of(volume, "volume").split(':').next().unwrap();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(
                    compose["volumes"].get(source).is_some(),
                    "{name:?} uses undeclared named volume {source}"
                );
            }
        }
    }

    let prometheus_mounts_config = seq(&services["prometheus"]["volumes"], "prometheus volumes")
        .iter()
        .any(|v| str_of(v, "volume").starts_with("./deploy/prometheus.yml:"));
    assert!(
        prometheus_mounts_config,
        "prometheus must mount deploy/prometheus.yml"
    );

    let prometheus = yaml("deploy/prometheus.yml");
    let targets: Vec<&str> = seq(&prometheus["scrape_configs"], "scrape_configs")
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|sc| seq(&sc["targets"], "targets"))
        .map(|t| str_of(t, "target"))
        .collect();
    assert!(
        targets.contains(&format!("linkr:{admin_port}").as_str()),
        "{targets:?}"
    );
    assert!(
        !targets.contains(&format!("linkr:{main_port}").as_str()),
        "scrape the admin port only"
    );
}

fn k8s_documents() -> Vec<Value> {
    let dir = repo_root().join("deploy/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        for doc in yaml_documents(&format!("deploy/k8s/{name}")) {
            assert!(doc["apiVersion"].is_string(), "{name}: apiVersion");
            assert!(doc["kind"].is_string(), "{name}: kind");
            if doc["kind"] == "Kustomization" {
                for resource in seq(&doc["resources"], "resources") {
                    let path = dir.join(str_of(resource, "resource"));
                    assert!(path.is_file(), "{name} lists missing {}", path.display());
                }
            } else {
                assert!(doc["metadata"]["name"].is_string(), "{name}: metadata.name");
            }
            docs.push(doc);
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// A probe's or Service's port, named or numeric, resolved against the container's ports.
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "port name");
    seq(&container["ports"], "container ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("container has no port named {name}"))
}

#[test]
fn kubernetes_deployment_probes_drains_and_runs_unprivileged() {
    let docs = k8s_documents();
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let deployment = deployments[0];
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "the embedded store is single-writer"
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");

    let pod = &deployment["spec"]["template"]["spec"];
    let containers = seq(&pod["containers"], "containers");
    let linkr = containers
        .iter()
        .find(|c| c["name"] == "linkr")
        .expect("linkr container");

    let main_port = port_of(str_of(k8s_env(linkr, "LINKR_ADDR"), "LINKR_ADDR"));
    let admin_port = port_of(str_of(
        k8s_env(linkr, "LINKR_ADMIN_ADDR"),
        "LINKR_ADMIN_ADDR",
    ));
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/startupz"),
    ] {
        let get = &linkr[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(
            container_port(linkr, &get["port"]),
            u64::from(main_port),
            "{probe} port"
        );
    }

    let grace = pod["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("grace period");
    let timeout = seconds(k8s_env(linkr, "LINKR_SHUTDOWN_TIMEOUT"));
    let delay = linkr["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|e| e["name"] == "LINKR_SHUTDOWN_DELAY"))
        .map_or(0.0, |e| seconds(&e["value"]));
    assert!(
        grace > timeout + delay,
        "terminationGracePeriodSeconds {grace} must exceed shutdown delay {delay} + timeout {timeout}"
    );

    let pod_sc = &pod["securityContext"];
    let sc = &linkr["securityContext"];
    assert!(pod_sc["runAsNonRoot"] == true || sc["runAsNonRoot"] == true);
    assert_ne!(pod_sc["runAsUser"], 0);
    assert_ne!(sc["runAsUser"], 0);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(
        seq(&sc["capabilities"]["drop"], "drop")
            .iter()
            .any(|c| c == "ALL")
    );
    let seccomp = if sc["seccompProfile"].is_null() {
        &pod_sc["seccompProfile"]
    } else {
        &sc["seccompProfile"]
    };
    assert_eq!(seccomp["type"], "RuntimeDefault");
    assert!(
        linkr["resources"]["requests"].is_mapping() && linkr["resources"]["limits"].is_mapping()
    );

    let keys_file = str_of(k8s_env(linkr, "LINKR_API_KEYS_FILE"), "LINKR_API_KEYS_FILE");
    let mount = seq(&linkr["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| keys_file.starts_with(&format!("{}/", str_of(&m["mountPath"], "mountPath"))))
        .expect("the API keys file is mounted");
    let volume = seq(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("volume of the keys mount");
    assert!(
        volume["secret"]["secretName"].is_string(),
        "API keys come from a Secret"
    );

    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    let service_port = |target: u16| {
        of_kind(&docs, "Service").into_iter().find(|svc| {
            let selects = svc["spec"]["selector"]
                .as_mapping()
                .is_some_and(|sel| sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
            selects
                && seq(&svc["spec"]["ports"], "service ports")
                    .iter()
                    .any(|p| container_port(linkr, &p["targetPort"]) == u64::from(target))
        })
    };
    let public = service_port(main_port).expect("a Service for the main port");
    let admin = service_port(admin_port).expect("a Service for the admin port");
    assert_ne!(
        public["metadata"]["name"], admin["metadata"]["name"],
        "admin gets its own Service"
    );
    let annotations = &admin["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        admin_port.to_string().as_str()
    );
    assert!(public["metadata"]["annotations"]["prometheus.io/scrape"].is_null());
}

/// Dockerfile instructions with line continuations joined and comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (op, args) = current
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_in_stages_and_runs_as_non_root() {
    let instructions = dockerfile_instructions();
    let stages: Vec<usize> = (0..instructions.len())
        .filter(|&i| instructions[i].0 == "FROM")
        .collect();
    assert!(stages.len() >= 2, "multi-stage build expected");
    assert!(
        instructions[stages[0]].1.to_lowercase().contains(" as "),
        "named builder stage"
    );

    let build = instructions
        .iter()
        .find(|(op, args)| op == "RUN" && args.contains("cargo build"));
    let build = &build.expect("a cargo build step").1;
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "{build}"
    );
    assert!(build.contains("--mount=type=cache"), "cargo caches mounted");

    let runtime = &instructions[*stages.last().unwrap()..];
    assert!(
        !runtime[0].1.starts_with("rust:"),
        "runtime image is not the toolchain"
    );
    assert!(
        runtime
            .iter()
            .any(|(op, args)| op == "COPY" && args.contains("--from="))
    );
    let users: Vec<&str> = runtime
        .iter()
        .filter(|(op, _)| op == "USER")
        .map(|(_, a)| a.as_str())
        .collect();
    let user = *users.last().expect("the runtime stage sets USER");
    for u in &users {
        let name = u.split(':').next().unwrap();
        assert!(
            name != "root" && name != "0",
            "runtime stage switches to root: USER {u}"
        );
    }
    let last_op = runtime.iter().rposition(|(op, _)| op == "USER").unwrap();
    assert!(
        !runtime[last_op..].iter().any(|(op, _)| op == "RUN"),
        "nothing runs after USER {user} in the runtime stage"
    );

    let all = |op: &str| -> String {
        runtime
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let exposed = all("EXPOSE");
    assert!(
        exposed.split_whitespace().any(|p| p == "8080")
            && exposed.split_whitespace().any(|p| p == "9090")
    );
    let env = all("ENV");
    assert!(env.contains("LINKR_ADDR=0.0.0.0:8080"), "{env}");
    assert!(env.contains("LINKR_ADMIN_ADDR=0.0.0.0:9090"), "{env}");
    assert!(env.contains("LINKR_DATA_DIR=/data"), "{env}");
    assert_eq!(all("STOPSIGNAL"), "SIGTERM");
    let labels = all("LABEL");
    assert!(
        labels.contains("org.opencontainers.image.version")
            && labels.contains("org.opencontainers.image.revision")
    );

    let ignored = read(".dockerignore");
    assert!(
        ignored
            .lines()
            .any(|l| l.trim().trim_start_matches("**/").trim_matches('/') == "target")
    );
}
