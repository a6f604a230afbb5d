//! Why a candidate's pods are not serving, when the pods themselves say so: a container that
//! cannot start (its image cannot be pulled, its configuration is wrong) or one that has crashed.
//! Such a candidate fails at once, naming the pod and the reason, rather than at the progress
//! deadline with no reason at all.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What is wrong with a candidate's pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    pub pod: String,
    pub kind: TroubleKind,
    /// The runtime's reason and message, or the exit code and the container's last words.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TroubleKind {
    /// The container cannot be created: image pull, image name or configuration errors.
    CannotStart,
    /// The container ran and exited (it restarted, or is waiting to).
    Crashed,
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            TroubleKind::CannotStart => "cannot start",
            TroubleKind::Crashed => "crashed",
        };
        write!(f, "pod {} {what}: {}", self.pod, self.detail)
    }
}

/// Waiting reasons after which the kubelet will not get further by itself. `ErrImagePull` is not
/// one: the first failed pull may be a registry's hiccup, and the back-off that follows is.
const CANNOT_START: &[&str] = &[
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The longest a termination message is quoted (the sidecar's last log lines can be long).
const DETAIL_MAX: usize = 300;

/// The first trouble among `pods` (sorted by name, so the same pods give the same answer).
pub fn candidate_trouble(pods: &[Pod]) -> Option<Trouble> {
    let mut pods: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods.into_iter().find_map(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        let status = p.status.as_ref()?;
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        containers.filter_map(container_trouble).next().map(|(kind, detail)| Trouble { pod: name, kind, detail })
    })
}

fn container_trouble(c: &ContainerStatus) -> Option<(TroubleKind, String)> {
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    if let Some(w) = waiting
        && let Some(reason) = w.reason.as_deref()
        && CANNOT_START.contains(&reason)
    {
        let msg = w.message.as_deref().unwrap_or_default();
        return Some((TroubleKind::CannotStart, clip(&format!("container {}: {reason}: {msg}", c.name))));
    }
    let crashed = c.restart_count > 0 || waiting.is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
    if crashed {
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let detail = match last {
            Some(t) => {
                let reason = t.reason.as_deref().unwrap_or("Error");
                let words = t.message.as_deref().and_then(last_words);
                match words {
                    Some(m) => format!("container {} exited with code {} ({reason}): {m}", c.name, t.exit_code),
                    None => format!("container {} exited with code {} ({reason})", c.name, t.exit_code),
                }
            }
            None => format!("container {} restarted {} times", c.name, c.restart_count),
        };
        return Some((TroubleKind::Crashed, clip(&detail)));
    }
    None
}

/// The line of a termination message (a container's last log lines, with `FallbackToLogsOnError`)
/// that says what went wrong: the last one that mentions an error, else the last one. A JSON log
/// line is rendered as its `message` and `error` fields.
fn last_words(message: &str) -> Option<String> {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines.iter().rev().find(|l| l.to_ascii_lowercase().contains("error")).or(lines.last())?;
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_string());
    };
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    match (text("message"), text("error")) {
        (Some(m), Some(e)) => Some(format!("{m}: {e}")),
        (Some(m), None) => Some(m.to_string()),
        (None, Some(e)) => Some(e.to_string()),
        (None, None) => Some(line.to_string()),
    }
}

fn clip(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= DETAIL_MAX {
        return one_line;
    }
    let mut out: String = one_line.chars().take(DETAIL_MAX).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": status})).unwrap()
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({"containerStatuses": [{"name": "sidecar", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                                      "state": {"waiting": {"reason": reason, "message": message}}}]})
    }

    #[test]
    fn each_kind_of_pod_trouble_and_what_is_not_trouble() {
        let crashed = json!({"containerStatuses": [{"name": "sidecar", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "message": "{\"level\":\"INFO\",\"message\":\"listening (not ready yet)\"}\n{\"level\":\"ERROR\",\"message\":\"model not served\",\"error\":\"model sha256 mismatch: expected 00, got 0f\"}\n"}}}]});
        let killed_once = json!({"containerStatuses": [{"name": "sidecar", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}}]});
        type Case = (&'static str, Pod, Option<(TroubleKind, &'static str)>);
        let cases: Vec<Case> = vec![
            ("starting", pod("a", waiting("ContainerCreating", "")), None),
            ("a first failed pull is not yet trouble", pod("a", waiting("ErrImagePull", "not found")), None),
            (
                "pull back-off",
                pod("a", waiting("ImagePullBackOff", "Back-off pulling image \"x\"")),
                Some((TroubleKind::CannotStart, "container sidecar: ImagePullBackOff: Back-off pulling image \"x\"")),
            ),
            (
                "a never-pull image that is absent",
                pod("a", waiting("ErrImageNeverPull", "image not present")),
                Some((TroubleKind::CannotStart, "container sidecar: ErrImageNeverPull: image not present")),
            ),
            (
                "a crash loop quotes the container's last words",
                pod("a", crashed),
                Some((
                    TroubleKind::Crashed,
                    "container sidecar exited with code 1 (Error): model not served: model sha256 mismatch: expected 00, got 0f",
                )),
            ),
            (
                "a restart after turning ready",
                pod("a", killed_once),
                Some((TroubleKind::Crashed, "container sidecar exited with code 137 (Error)")),
            ),
            ("no status yet", serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(), None),
        ];
        for (what, p, want) in cases {
            let got = candidate_trouble(&[p]).map(|t| (t.kind, t.detail));
            assert_eq!(got, want.map(|(k, d)| (k, d.to_string())), "{what}");
        }
    }

    #[test]
    fn pods_being_deleted_are_ignored_and_the_first_by_name_is_named() {
        let mut going = pod("a", waiting("ImagePullBackOff", "x"));
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(candidate_trouble(&[going.clone()]), None);
        let t = candidate_trouble(&[
            pod("c", waiting("ImagePullBackOff", "x")),
            going,
            pod("b", waiting("ErrImageNeverPull", "y")),
        ]);
        assert_eq!(t.unwrap().to_string(), "pod b cannot start: container sidecar: ErrImageNeverPull: y");
    }

    #[test]
    fn long_last_words_are_clipped_to_one_line() {
        let long = "x".repeat(1000);
        let p = pod("a", waiting("CreateContainerConfigError", &format!("line\n{long}")));
        let d = candidate_trouble(&[p]).unwrap().detail;
        assert!(d.chars().count() <= DETAIL_MAX + 1 && d.ends_with('…') && !d.contains('\n'), "{d}");
    }
}
