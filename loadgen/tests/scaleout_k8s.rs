//! The Kubernetes manifests of deploy/k8s/loadgen parse; the workers sit behind a headless
//! Service that the coordinator's --workers-at names, one URL per replica; both containers run
//! the image and the arguments the README gives, and those arguments parse with loadgen's own
//! command line.

use clap::Parser;
use linkr_loadgen::cli::{Cli, Command};
use serde_yaml::Value;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/k8s/loadgen").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

use serde::Deserialize;

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The README's "Load beyond one core" section.
fn readme_section() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("### Load beyond one core")
        .expect("README has a 'Load beyond one core' section");
    let rest = &readme[start + 4..];
    let end = rest
        .find("\n## ")
        .or_else(|| rest.find("\n### "))
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

#[test]
fn manifests_parse_and_agree_with_the_readme_and_the_cli() {
    let workers = docs("workers.yaml");
    let coordinator = docs("coordinator.yaml");

    let service = kind(&workers, "Service");
    let set = kind(&workers, "StatefulSet");
    assert_eq!(service["spec"]["clusterIP"], "None", "headless");
    assert_eq!(set["spec"]["serviceName"], service["metadata"]["name"]);
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let replicas = set["spec"]["replicas"].as_u64().unwrap();
    let worker = &set["spec"]["template"]["spec"]["containers"][0];
    let worker_args = strings(&worker["args"]);

    let job = kind(&coordinator, "Job");
    let coord = &job["spec"]["template"]["spec"]["containers"][0];
    let coord_args = strings(&coord["args"]);
    let image = worker["image"].as_str().unwrap();
    assert_eq!(coord["image"].as_str().unwrap(), image);

    // --workers-at names every replica through the headless Service, on its port.
    let at = coord_args
        .iter()
        .position(|a| a == "--workers-at")
        .map(|i| coord_args[i + 1].clone())
        .expect("the coordinator runs over --workers-at");
    let set_name = set["metadata"]["name"].as_str().unwrap();
    let svc_name = service["metadata"]["name"].as_str().unwrap();
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("http://{set_name}-{i}.{svc_name}:{port}"))
        .collect();
    assert_eq!(at, expected.join(","));

    // Both argument lists parse with loadgen's command line.
    let parse = |args: &[String]| {
        Cli::try_parse_from(std::iter::once("loadgen".to_string()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    match parse(&worker_args).command {
        Command::Worker(w) => assert_eq!(w.listen.port() as u64, port),
        other => panic!("the workers do not run `loadgen worker`: {other:?}"),
    }
    match parse(&coord_args).command {
        Command::Knee(k) => assert_eq!(k.workers_at, expected),
        other => panic!("the coordinator does not run `loadgen knee`: {other:?}"),
    }
    // The report goes to the mounted volume.
    let out = coord_args
        .iter()
        .position(|a| a == "--out")
        .map(|i| coord_args[i + 1].clone())
        .unwrap();
    let mount = coord["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert!(out.starts_with(mount), "{out} outside {mount}");

    // The README shows the same image and arguments.
    let section = readme_section();
    assert!(section.contains(image), "README does not name {image}");
    assert!(
        section.contains(&format!("loadgen {}", worker_args.join(" "))),
        "README does not give the workers' arguments"
    );
    assert!(
        section.contains(&format!("loadgen {}", coord_args.join(" "))),
        "README does not give the coordinator's arguments:\nloadgen {}",
        coord_args.join(" ")
    );
    assert!(section.contains("deploy/k8s/loadgen/workers.yaml"));
    assert!(section.contains("deploy/k8s/loadgen/coordinator.yaml"));
}
