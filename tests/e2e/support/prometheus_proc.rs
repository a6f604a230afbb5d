//! The cluster's Prometheus as a process the outage suite stops and starts again.

use std::process::{Command, Stdio};

use crate::*;

pub fn cluster_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR"))
}

pub fn stop_prometheus() {
    let pid = std::fs::read_to_string(cluster_dir().join("prometheus.pid")).unwrap().trim().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    for _ in 0..100 {
        if !Command::new("kill").args(["-0", &pid]).stderr(Stdio::null()).status().unwrap().success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Prometheus did not stop");
}

/// Starts Prometheus again with the cluster's exact command (same port, same data) and records
/// its PID where the cluster's teardown finds it.
pub fn start_prometheus() {
    let command = std::fs::read_to_string(cluster_dir().join("prometheus/command")).unwrap();
    let log = cluster_dir().join("logs/prometheus-restarted.log");
    let out = Command::new("bash")
        .args(["-c", &format!("setsid {command} >{} 2>&1 & echo $!", log.display())])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(cluster_dir().join("prometheus.pid"), &pid).unwrap();
}

/// An alerting rule in the cluster's Prometheus that fires at once (`vector(1)`, no `for`) with
/// the given labels, until [`FiringAlert::resolve`]: the real `ALERTS` series an alert-free window
/// reads, made by Prometheus's own rule evaluation.
pub struct FiringAlert {
    name: String,
    path: std::path::PathBuf,
}

impl FiringAlert {
    /// Writes the rule, reloads Prometheus, and returns once `ALERTS` says it fires.
    pub async fn fire(name: &str, labels: &[(&str, &str)]) -> Self {
        let labels: String = labels.iter().map(|(k, v)| format!("{k}: {v:?}, ")).collect();
        let rule = format!(
            "groups:\n  - name: {name}\n    rules:\n      - alert: {name}\n        expr: vector(1)\n        labels: {{{}}}\n",
            labels.trim_end_matches(", ")
        );
        let path = cluster_dir().join("prometheus/rules").join(format!("{name}.yml"));
        std::fs::write(&path, rule).unwrap();
        reload_rules().await;
        let alert = Self { name: name.to_string(), path };
        alert.wait_firing(true).await;
        alert
    }

    /// Removes the rule, reloads Prometheus, and returns once `ALERTS` no longer has it firing.
    pub async fn resolve(self) {
        std::fs::remove_file(&self.path).unwrap();
        reload_rules().await;
        self.wait_firing(false).await;
    }

    async fn wait_firing(&self, firing: bool) {
        let q = format!("ALERTS{{alertname={:?},alertstate=\"firing\"}}", self.name);
        let prom = prometheus();
        let what = format!("alert {} {}", self.name, if firing { "firing" } else { "resolved" });
        wait_for(&what, Duration::from_secs(30), || async {
            let now = first_sample(&prom, &q).await.ok()?;
            (now.is_some() == firing).then_some(())
        })
        .await;
    }
}

/// Prometheus reads its rule files again on SIGHUP (the cluster's Prometheus has no lifecycle API:
/// pods can reach it). The caller waits on `ALERTS` for the outcome.
async fn reload_rules() {
    let pid = std::fs::read_to_string(cluster_dir().join("prometheus.pid")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success(), "SIGHUP to Prometheus {pid}");
}
