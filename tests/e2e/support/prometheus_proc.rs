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
