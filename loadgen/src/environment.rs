//! The machine and build a knee run measured: CPU, cores used, kernel, git commit, build profiles,
//! allocator. Everything is best effort: a missing fact reads "unknown", never an error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the caller knows about the service under test.
#[derive(Debug, Clone, Default)]
pub struct ServiceFacts {
    /// Process id of a service this run started (for its CPU affinity).
    pub pid: Option<u32>,
    /// The binary this run started.
    pub binary: Option<PathBuf>,
    /// Allocator as the service reports it (linkr's `/debug/allocs`).
    pub allocator: Option<String>,
    /// How the service and generator were pinned, as the spawner reports it.
    pub pinning: Option<String>,
}

/// Ordered `(what, value)` pairs for the report and `summary.json`.
pub fn collect(service: &ServiceFacts) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut push = |k: &str, v: String| env.push((k.to_string(), v));
    push("CPU", cpu_model().unwrap_or_else(|| "unknown".into()));
    push(
        "logical CPUs (machine)",
        cpu_count().map_or_else(|| "unknown".into(), |n| n.to_string()),
    );
    push(
        "generator CPUs (affinity)",
        cpus_allowed("self").unwrap_or_else(|| "unknown".into()),
    );
    push(
        "service CPUs (affinity)",
        match service.pid {
            Some(pid) => {
                cpus_allowed(&pid.to_string()).unwrap_or_else(|| format!("unknown (pid {pid})"))
            }
            None => "not known (service not started by this run)".into(),
        },
    );
    if let Some(p) = &service.pinning {
        push("pinning", p.clone());
    }
    push(
        "kernel",
        read_trimmed(Path::new("/proc/sys/kernel/osrelease")).unwrap_or_else(|| "unknown".into()),
    );
    push(
        "git commit",
        git_commit().unwrap_or_else(|| "unknown (not a git checkout or no commit yet)".into()),
    );
    push("loadgen build profile", build_profile().into());
    push(
        "service binary",
        service.binary.as_ref().map_or_else(
            || "not started by this run".into(),
            |b| b.display().to_string(),
        ),
    );
    push(
        "service build profile",
        service_profile(service.binary.as_deref()),
    );
    push(
        "allocator",
        service
            .allocator
            .clone()
            .unwrap_or_else(|| "mimalloc (default build; not reported by the service)".into()),
    );
    push(
        "loadgen",
        format!(
            "linkr-loadgen {} (goose 0.19 users, open-model schedule, {} client: {})",
            env!("CARGO_PKG_VERSION"),
            crate::driver::client(),
            match crate::driver::client() {
                crate::driver::ClientKind::Lean => crate::engine::engine(),
                crate::driver::ClientKind::Reqwest => "goose-reqwest/multi-thread + pacer thread",
            }
        ),
    );
    env
}

pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn service_profile(binary: Option<&Path>) -> String {
    let Some(binary) = binary else {
        return "unknown (not started by this run)".into();
    };
    let dir = binary
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str());
    match dir {
        Some(d @ ("release" | "debug" | "bench")) => {
            format!("{d} (from the binary's target directory)")
        }
        _ => "unknown".into(),
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// CPUs of the machine (not this process's affinity, which the spawner may have narrowed).
fn cpu_count() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let n = info.lines().filter(|l| l.starts_with("processor")).count();
    (n > 0).then_some(n)
}

fn cpus_allowed(pid: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit} (with uncommitted changes)")
    } else {
        commit
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_the_basics() {
        let env = collect(&ServiceFacts {
            pid: Some(std::process::id()),
            binary: Some(PathBuf::from("/x/target/release/linkr")),
            allocator: Some("mimalloc".into()),
            pinning: None,
        });
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert!(!get("CPU").is_empty());
        assert!(!get("service CPUs (affinity)").starts_with("unknown"));
        assert_eq!(get("allocator"), "mimalloc");
        assert!(get("service build profile").starts_with("release"));
    }
}
