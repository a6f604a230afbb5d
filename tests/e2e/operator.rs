//! The operator's tools end to end: `kubectl modelrollout` (found by kubectl as a plugin on PATH)
//! driving real rollouts, and the Helm chart installed into the test apiserver.

use std::process::Stdio;

use std::time::Duration;
use tokio::io::AsyncBufReadExt;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use modelrollout::api::{Outcome, Phase};
use modelrollout_e2e::*;
use serde_json::{Value, json};

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn k_kubectl_plugin_watches_pauses_resumes_aborts_retries_and_promotes() {
    let env = Env::kwok_fraud("plugin", 150).await;
    let ns = env.ns.name.clone();

    // Idle v1: status exits 0, list shows it, -o json is the object.
    let (code, out, err) = plugin(&["status", "fraud", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Phase:      Idle") && out.contains("stable v1"), "{out}");
    let (code, out, _) = plugin(&["list", "-A"]).await;
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.starts_with(&ns)).unwrap_or_else(|| panic!("{ns} not in\n{out}"));
    assert!(row.contains("fraud") && row.contains("Idle") && row.contains("v1"), "{row}");
    let (_, out, _) = plugin(&["status", "fraud", "-n", &ns, "-o", "json"]).await;
    let obj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(obj["kind"], "ModelRollout");
    assert!(obj["metadata"].get("managedFields").is_none(), "managedFields are noise for on-call");

    // Clear errors with exit code 1.
    let (code, _, err) = plugin(&["status", "nope", "-n", &ns]).await;
    assert_eq!(code, 1);
    assert!(err.contains(&format!("ModelRollout \"nope\" not found in namespace \"{ns}\"")), "{err}");
    let (code, _, err) = plugin(&["abort", "fraud", "-n", &ns]).await;
    assert_eq!(code, 1);
    assert!(err.contains("nothing to abort: fraud is Idle"), "{err}");
    let (code, _, _) = plugin(&["status", "--bogus"]).await;
    assert_eq!(code, 2, "usage errors exit 2");

    // v2 starts; pause holds it, and a GitOps re-apply (which does not own spec.paused) keeps it held.
    let v2 = Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(4)).gates(default_gates()).build();
    gitops_apply(&ns, &v2);
    env.wait(Duration::from_secs(60), "the status", |s| s.phase == Some(Phase::Progressing)).await;
    let (code, out, err) = plugin(&["pause", "fraud", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    env.wait(Duration::from_secs(20), "the status", |s| s.phase == Some(Phase::Paused)).await;
    gitops_apply(&ns, &v2);
    let mr = env.get().await;
    assert!(mr.spec.paused, "the pause survives a GitOps re-apply");
    let managers: Vec<String> =
        mr.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"kubectl-modelrollout".to_string()), "{managers:?}");
    let (_, out, _) = plugin(&["status", "fraud", "-n", &ns]).await;
    assert!(out.contains("Held:       by spec.paused"), "{out}");
    assert_eq!(env.reconciled().await.status.unwrap().phase, Some(Phase::Paused), "held after a reconcile");
    let (code, out, _) = plugin(&["resume", "fraud", "-n", &ns]).await;
    assert_eq!(code, 0);
    assert!(out.contains("resumed"), "{out}");

    // `status --watch` follows the rollout and ends by itself, exit 0, when v2 is promoted.
    let (code, out, err) = plugin(&["status", "fraud", "-n", &ns, "--watch", "--timeout", "4m"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Phase:      Promoted"), "{out}");
    assert!(out.contains("▶ canary-25"), "the watch showed the stages as they went: {out}");
    assert!(out.contains("✔ shadow (mirror 100%)  ✔ canary-5 (5%)  ✔ canary-25 (25%)  ✔ full (100%)"), "{out}");
    let (_, out, _) = plugin(&["history", "fraud", "-n", &ns]).await;
    // Each version's life first: v2's row says how it ended.
    let v2 = out.lines().find(|l| l.trim_start().starts_with("v2 ")).unwrap_or_default();
    assert!(out.starts_with("Versions:") && v2.contains("Promoted"), "{out}");

    // A bad candidate: a watcher started before the abort ends with exit 3 when it is rolled back.
    let v3 = Manifest::fraud("v3", local_file("fraud-v2-bad-fpr.onnx"))
        .stages(four_stages(60))
        .gates(default_gates())
        .build();
    gitops_apply(&ns, &v3);
    env.wait(Duration::from_secs(60), "the status", |s| s.candidate_version.as_deref() == Some("v3")).await;
    let mut watcher = plugin_command(&["status", "fraud", "-n", &ns, "-w", "--timeout", "2m"], None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The watcher is watching once it has printed the rollout.
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap();
    assert!(first.is_some_and(|l| l.contains("fraud")), "the watcher printed the rollout");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (code, out, err) = plugin(&["abort", "fraud", "-n", &ns, "--reason", "on-call: FPR complaints"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("controller acted: phase RolledBack"), "{out}");
    let watched = watcher.wait_with_output().await.unwrap();
    assert_eq!(watched.status.code(), Some(3), "{}", String::from_utf8_lossy(&watched.stderr));
    let (code, out, _) = plugin(&["status", "fraud", "-n", &ns]).await;
    assert_eq!(code, 3, "status exits 3 after a rollback: {out}");
    assert!(out.contains("on-call: FPR complaints"), "{out}");
    let st = env.get().await.status.unwrap();
    assert_eq!(st.history[0].outcome, Outcome::Aborted);
    assert_eq!(env.route_rule().await["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));

    // retry starts v3 again; promote --full makes it stable at once.
    let (code, out, err) = plugin(&["retry", "fraud", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    env.wait(Duration::from_secs(30), "the status", |s| s.phase == Some(Phase::Progressing)).await;
    let (code, out, err) = plugin(&["promote", "fraud", "-n", &ns, "--full"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("controller acted: phase Promoted"), "{out}");
    let (code, out, _) = plugin(&["status", "fraud", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stable v3"), "{out}");
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn l_kubectl_plugin_says_when_it_has_no_permission() {
    let ns = TestNamespace::new("noperm").await;
    kubectl_ok(&["create", "serviceaccount", "nobody", "-n", &ns.name], None);
    let kubeconfig = token_kubeconfig(&ns.name, "nobody");
    let (code, _, err) = plugin_as(&["status", "fraud"], Some(&kubeconfig)).await;
    assert_eq!(code, 1);
    assert!(err.contains("no permission") && err.contains("cannot get resource \"modelrollouts\""), "{err}");
    let (code, _, err) = plugin_as(&["list"], Some(&kubeconfig)).await;
    assert_eq!(code, 1);
    assert!(err.contains("no permission"), "{err}");
    // --context picks the kubeconfig context, as kubectl's does.
    let (code, _, err) = plugin_as(&["list", "--context", "sa"], Some(&kubeconfig)).await;
    assert_eq!(code, 1);
    assert!(err.contains("no permission"), "{err}");
    let (code, _, err) = plugin_as(&["list", "--context", "no-such-context"], Some(&kubeconfig)).await;
    assert_eq!(code, 1);
    assert!(err.contains("kubeconfig") && err.contains("no-such-context"), "{err}");
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn m_helm_install_brings_the_controller_up_and_a_rollout_progresses() {
    let ns = TestNamespace::new("helm").await;
    let release = chart_release(&ns.name);
    let chart = root().join("charts/modelrollout");
    helm_ok(&["lint", chart.to_str().unwrap()]);
    helm_ok(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--set",
        &format!("watchNamespaces={{{}}}", ns.name),
        "--set",
        &format!("prometheus.address={}", prometheus_url()),
        "--set",
        "logFormat=text",
        "--wait",
        "--timeout",
        "90s",
    ]);
    let client = client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get(&format!("{release}-controller")).await.unwrap();
    assert_eq!(d.status.as_ref().and_then(|s| s.available_replicas), Some(1), "the chart's Deployment is up");
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"));

    // kwok pods run no containers: the controller binary runs here with the Deployment's own
    // arguments, as the chart's service account with the chart's RBAC.
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| if a.starts_with("--metrics-addr=") { format!("--metrics-addr=127.0.0.1:{}", free_port()) } else { a })
        .collect();
    assert!(args.contains(&format!("--namespaces={}", ns.name)), "{args:?}");
    assert!(args.contains(&format!("--leader-election-namespace={}", ns.name)), "{args:?}");
    let kubeconfig = token_kubeconfig(&ns.name, pod.service_account_name.as_deref().unwrap());
    // The evidence service as this build's process (kwok runs no pod of it), its URL given to the
    // controller as the chart gives its own; the labels go to it once.
    let evidence = EvidenceProc::start(&ns.name, free_port()).await;
    let mut args = args;
    args.push(format!("--evidence-url={}", evidence.base));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let controller = ControllerProc::start_with_args(&ns.name, &kubeconfig, &arg_refs);
    let labels = Labels::ToEvidence { base: evidence.base.clone(), token: labeller_token(&ns.name) };
    let harness = Harness::start_with(client.clone(), &ns.name, "fraud", "fraud", 150, labels);
    let mut v1 =
        Manifest::fraud("v1", local_file("fraud-v1.onnx")).stages(four_stages(4)).gates(default_gates()).build();
    v1["spec"]["trafficRouting"] =
        json!({"gatewayAPI": {"httpRoute": "fraud", "create": true, "parentRefs": [{"name": "public"}]}});
    gitops_apply(&ns.name, &v1);
    let mut v2 =
        Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(4)).gates(default_gates()).build();
    v2["spec"]["trafficRouting"] = v1["spec"]["trafficRouting"].clone();
    let api: Api<modelrollout::api::ModelRollout> = Api::namespaced(client.clone(), &ns.name);
    let phase = |api: Api<modelrollout::api::ModelRollout>| async move { api.get("fraud").await.ok()?.status?.phase };
    wait_for("v1 stable", Duration::from_secs(60), || async {
        (phase(api.clone()).await == Some(Phase::Idle)).then_some(())
    })
    .await;
    wait_for("the stable sidecar", Duration::from_secs(30), || async {
        harness.running_versions().contains(&"v1".to_string()).then_some(())
    })
    .await;
    gitops_apply(&ns.name, &v2);
    wait_for("v2 promoted", Duration::from_secs(180), || async {
        (phase(api.clone()).await == Some(Phase::Promoted)).then_some(())
    })
    .await;
    let logs = controller.logs();
    assert!(!logs.contains("forbidden"), "the chart's RBAC is enough: {logs}");
    harness.shutdown().await;
    drop(controller);
    helm_ok(&["uninstall", &release, "--namespace", &ns.name]);
    ns.delete().await;
}
