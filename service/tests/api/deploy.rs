//! The shipped Kubernetes manifests use the security settings: trusted proxies for the per-IP
//! limit, the admin token, and a NetworkPolicy that admits only Prometheus to the admin port.

use std::path::Path;

use linkr::client_ip::{ForwardedHeader, TrustedProxies};
use serde::Deserialize;
use serde_yaml::Value;

fn k8s(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn one(file: &str, kind: &str) -> Value {
    let docs: Vec<Value> = k8s(file)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(docs.len(), 1, "one {kind} in {file}");
    docs.into_iter().next().unwrap()
}

#[test]
fn the_manifests_trust_the_ingress_proxies_for_the_client_ip() {
    let config = one("configmap.yaml", "ConfigMap");
    let data = &config["data"];
    let networks = TrustedProxies::parse_networks(data["LINKR_TRUSTED_PROXIES"].as_str().unwrap())
        .expect("LINKR_TRUSTED_PROXIES parses");
    assert!(!networks.is_empty());
    let header = data["LINKR_CLIENT_IP_HEADER"].as_str().unwrap();
    assert_eq!(
        ForwardedHeader::parse(header),
        Ok(ForwardedHeader::XForwardedFor)
    );
    assert_ne!(
        data["LINKR_RATE_LIMIT"], "0",
        "the limit the proxies feed is on"
    );
}

#[test]
fn the_admin_port_needs_the_token_and_is_open_to_prometheus_only() {
    let deployment = one("deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let linkr = &pod["containers"][0];
    let env = linkr["env"].as_sequence().unwrap();
    let token_file = env
        .iter()
        .find(|e| e["name"] == "LINKR_ADMIN_TOKEN_FILE")
        .and_then(|e| e["value"].as_str())
        .expect("LINKR_ADMIN_TOKEN_FILE is set");
    let mount = linkr["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| token_file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .expect("the token file is mounted");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret = volume["secret"]["secretName"]
        .as_str()
        .expect("from a Secret");
    let example = k8s("secret.example.yaml");
    assert!(
        example.iter().any(|d| d["metadata"]["name"] == secret),
        "secret.example.yaml shows {secret}"
    );

    let policy = one("networkpolicy.yaml", "NetworkPolicy");
    let kustomization = one("kustomization.yaml", "Kustomization");
    assert!(
        kustomization["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|r| r == "networkpolicy.yaml")
    );
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(
        spec["policyTypes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|t| t == "Ingress")
    );
    let rules = spec["ingress"].as_sequence().unwrap();
    let opens = |port: &'static str| -> Vec<&Value> {
        rules
            .iter()
            .filter(|r| {
                r["ports"]
                    .as_sequence()
                    .is_some_and(|ps| ps.iter().any(|p| p["port"] == port))
            })
            .collect()
    };
    assert!(
        opens("http").iter().any(|r| r["from"].is_null()),
        "the public port is open to all"
    );
    let admin_rules = opens("admin");
    assert!(!admin_rules.is_empty());
    for rule in admin_rules {
        let from = rule["from"]
            .as_sequence()
            .expect("the admin port has a from list");
        assert!(!from.is_empty());
        for peer in from {
            assert!(
                peer["podSelector"]["matchLabels"].is_mapping(),
                "admin peers are selected pods: {peer:?}"
            );
        }
    }
}
