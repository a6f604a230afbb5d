//! `kubectl modelrollout`: the on-call tool. Every write is a change to the spec (`spec.paused`, or a
//! one-shot `spec.operations` request with a fresh id), so what it does is visible in the object,
//! survives GitOps re-syncs, and is exactly what `kubectl patch` could do by hand.

pub mod render;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use modelrollout_api::{HandledOperations, Hold, ModelRollout, Phase};
use render::Style;

/// Exit codes scripts can rely on.
pub mod exit {
    pub const OK: i32 = 0;
    /// No such rollout, no permission, CRD not installed, cluster unreachable, a refused request.
    pub const ERROR: i32 = 1;
    /// Bad flags (clap's own code).
    pub const USAGE: i32 = 2;
    pub const ROLLED_BACK: i32 = 3;
    pub const FAILED: i32 = 4;
    /// `status --watch --timeout` ran out before the rollout settled.
    pub const TIMEOUT: i32 = 5;
}

/// The field manager of every write, so `managedFields` says who paused or aborted a rollout.
pub const FIELD_MANAGER: &str = "kubectl-modelrollout";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-modelrollout",
    bin_name = "kubectl modelrollout",
    version,
    about = "Inspect and operate ModelRollouts",
    after_help = "Exit codes: 0 ok; 1 error; 2 usage; 3 rolled back; 4 failed; 5 --watch timed out."
)]
pub struct Args {
    /// Path to the kubeconfig file ($KUBECONFIG or ~/.kube/config when unset).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (the context's namespace when unset).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List ModelRollouts with their phase, stage and weights.
    #[command(alias = "ls", alias = "get")]
    List {
        /// Across all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Stage timeline, weights, gates against their limits, recent history. Exits 3 when the
    /// rollout was rolled back and 4 when it failed.
    Status {
        name: String,
        /// Follow until the rollout settles (promoted, rolled back, failed or idle).
        #[arg(short, long)]
        watch: bool,
        /// With --watch: give up after this long (e.g. 10m) with exit code 5.
        #[arg(long, value_parser = render::parse_timeout)]
        timeout: Option<jiff::SignedDuration>,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Hold the current weights (sets spec.paused).
    Pause { name: String },
    /// Release a pause set by `pause` (clears spec.paused).
    Resume { name: String },
    /// Approve the current stage now, skipping its gates (--full: straight to 100% and stable).
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Roll the candidate back now: weight 0, stable serves everything.
    Abort {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Start a rolled-back or failed candidate again from the first stage.
    Retry {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// After a promotion: all traffic back to the retained previous version (at once when it is
    /// warm, once its pods are Ready when cold). The undone version stays rolled back.
    Undo {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Each version's life (rolled out, promoted, undone, deprecated, removed), then every entry.
    History {
        name: String,
        #[arg(short, long)]
        output: Option<Output>,
    },
}

/// A failure explained for a human at 3 a.m.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Message(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

type Result<T> = std::result::Result<T, PluginError>;

fn fail(msg: impl Into<String>) -> PluginError {
    PluginError::Message(msg.into())
}

pub async fn run(args: Args) -> i32 {
    match execute(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

struct Session {
    client: Client,
    namespace: String,
    style: Style,
}

async fn connect(args: &Args) -> Result<Session> {
    let options = kube::config::KubeConfigOptions { context: args.context.clone(), cluster: None, user: None };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("reading kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| fail(format!("kubeconfig: {e}")))?;
    let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    Ok(Session { client, namespace, style: Style { colour } })
}

impl Session {
    fn api(&self) -> Api<ModelRollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Turns the apiserver's answers into what went wrong in words.
    async fn explain(&self, err: kube::Error, name: Option<&str>) -> PluginError {
        let kube::Error::Api(status) = &err else {
            return match err {
                kube::Error::HyperError(_) | kube::Error::Service(_) => {
                    fail(format!("cannot reach the cluster: {err} (check --context / KUBECONFIG)"))
                }
                other => PluginError::Kube(other),
            };
        };
        match status.code {
            403 => fail(format!("no permission: {}", status.message)),
            401 => fail(format!("not authenticated: {} (check your kubeconfig credentials)", status.message)),
            404 => {
                if self.client.list_api_group_resources("modelrollout.dev/v1alpha1").await.is_err() {
                    fail(
                        "the ModelRollout CRD (modelrollouts.modelrollout.dev) is not installed in this cluster; \
                         install the chart (helm install modelrollout charts/modelrollout) or kubectl apply -f crds/",
                    )
                } else {
                    match name {
                        Some(n) => fail(format!("ModelRollout {n:?} not found in namespace {:?}", self.namespace)),
                        None => fail(format!("not found: {}", status.message)),
                    }
                }
            }
            _ => PluginError::Kube(err),
        }
    }

    async fn get(&self, name: &str) -> Result<ModelRollout> {
        match self.api().get(name).await {
            Ok(mr) => Ok(mr),
            Err(e) => Err(self.explain(e, Some(name)).await),
        }
    }

    /// The user the apiserver authenticates this client as (a SelfSubjectReview), recorded with
    /// the requests this plugin writes; none when the apiserver cannot say.
    async fn whoami(&self) -> Option<String> {
        use k8s_openapi::api::authentication::v1::SelfSubjectReview;
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let review = api.create(&Default::default(), &SelfSubjectReview::default()).await.ok()?;
        review.status?.user_info?.username
    }

    async fn patch_spec(&self, name: &str, spec: Value) -> Result<ModelRollout> {
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.api().patch(name, &params, &Patch::Merge(json!({ "spec": spec }))).await {
            Ok(mr) => Ok(mr),
            Err(e) => Err(self.explain(e, Some(name)).await),
        }
    }
}

fn print_object<T: serde::Serialize>(value: &T, output: Output) -> Result<()> {
    let mut v = serde_json::to_value(value).map_err(|e| fail(e.to_string()))?;
    strip_managed_fields(&mut v);
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&v).map_err(|e| fail(e.to_string()))? + "\n",
        Output::Yaml => serde_yaml::to_string(&v).map_err(|e| fail(e.to_string()))?,
    };
    print!("{text}");
    Ok(())
}

fn strip_managed_fields(v: &mut Value) {
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip_managed_fields);
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

fn phase_exit(phase: Option<Phase>) -> i32 {
    match phase {
        Some(Phase::RolledBack) => exit::ROLLED_BACK,
        Some(Phase::Failed) => exit::FAILED,
        _ => exit::OK,
    }
}

fn operation_id() -> String {
    // Unique per request; the controller acts on each id once.
    format!("kubectl-{}", Timestamp::now().as_millisecond())
}

async fn execute(args: Args) -> Result<i32> {
    let s = connect(&args).await?;
    let now = Timestamp::now;
    match args.command {
        Command::List { all_namespaces, output } => {
            let api: Api<ModelRollout> = if all_namespaces { Api::all(s.client.clone()) } else { s.api() };
            let mut items = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => return Err(s.explain(e, None).await),
            };
            items.sort_by_key(|m| (m.namespace(), m.name_any()));
            match output {
                Some(o) => print_object(&json!({"apiVersion": "v1", "kind": "List", "items": items}), o)?,
                None => print!("{}", render::list(&items, all_namespaces, now(), s.style)),
            }
            Ok(exit::OK)
        }
        Command::Status { name, watch: false, output, .. } => {
            let mr = s.get(&name).await?;
            match output {
                Some(o) => print_object(&mr, o)?,
                None => print!("{}", render::status(&mr, now(), s.style)),
            }
            Ok(phase_exit(mr.status.as_ref().and_then(|st| st.phase)))
        }
        Command::Status { name, watch: true, timeout, output } => watch_status(&s, &name, timeout, output).await,
        Command::History { name, output } => {
            let mr = s.get(&name).await?;
            match output {
                Some(o) => print_object(&mr.status.unwrap_or_default().history, o)?,
                None => print!("{}", render::history(&mr, now(), s.style)),
            }
            Ok(exit::OK)
        }
        Command::Pause { name } => {
            // A missing rollout is explained by `patch_spec` like by `get`.
            s.patch_spec(&name, json!({"paused": true})).await?;
            println!("modelrollout {name} paused: weights held until `kubectl modelrollout resume {name}`");
            Ok(exit::OK)
        }
        Command::Resume { name } => {
            let mr = s.get(&name).await?;
            let st = mr.status.clone().unwrap_or_default();
            if mr.spec.paused {
                s.patch_spec(&name, json!({"paused": false})).await?;
                println!("modelrollout {name} resumed (spec.paused cleared)");
            } else {
                println!("modelrollout {name} is not paused by spec.paused");
            }
            // Other holds are not released by resume; say what is.
            match st.hold {
                Some(Hold::Spec) | None => {}
                Some(hold) => println!("modelrollout {name} is still held {}", render::hold_text(hold)),
            }
            Ok(exit::OK)
        }
        Command::Promote { name, full, reason } => {
            let mr = s.get(&name).await?;
            require_active(&mr, "promote")?;
            let id = operation_id();
            s.patch_spec(&name, json!({"operations": {"promote": {"id": id, "reason": reason, "full": full}}})).await?;
            let what = if full { "full promotion to stable" } else { "promotion of the current stage" };
            acknowledge(&s, &name, &id, |h| h.promote.as_deref(), what).await
        }
        Command::Abort { name, reason } => {
            let mr = s.get(&name).await?;
            require_active(&mr, "abort")?;
            let id = operation_id();
            let by = s.whoami().await;
            s.patch_spec(&name, json!({"operations": {"abort": {"id": id, "reason": reason, "requestedBy": by}}}))
                .await?;
            acknowledge(&s, &name, &id, |h| h.abort.as_deref(), "abort").await
        }
        Command::Undo { name, reason } => {
            let mr = s.get(&name).await?;
            let st = mr.status.clone().unwrap_or_default();
            if let Some(phase) = st.phase.filter(|p| p.is_active()) {
                return Err(fail(format!(
                    "cannot undo: {name} is {} with candidate {} (abort rolls a candidate back)",
                    phase.as_str(),
                    st.candidate_version.unwrap_or_default()
                )));
            }
            let Some(retained) = &st.retained else {
                return Err(fail(format!(
                    "nothing to undo: {name} retains no previous version (none was promoted over, or its retention ended)"
                )));
            };
            let what = format!("undo to {} ({})", retained.model.version, retained.mode.as_str());
            let id = operation_id();
            let by = s.whoami().await;
            s.patch_spec(&name, json!({"operations": {"undo": {"id": id, "reason": reason, "requestedBy": by}}}))
                .await?;
            acknowledge(&s, &name, &id, |h| h.undo.as_deref(), &what).await
        }
        Command::Retry { name, reason } => {
            let mr = s.get(&name).await?;
            let phase = mr.status.as_ref().and_then(|st| st.phase);
            if !matches!(phase, Some(Phase::RolledBack | Phase::Failed)) {
                return Err(fail(format!(
                    "nothing to retry: {name} is {} (retry restarts a rolled-back or failed candidate)",
                    phase.map_or("without status", Phase::as_str)
                )));
            }
            let id = operation_id();
            let by = s.whoami().await;
            s.patch_spec(&name, json!({"operations": {"retry": {"id": id, "reason": reason, "requestedBy": by}}}))
                .await?;
            acknowledge(&s, &name, &id, |h| h.retry.as_deref(), "retry").await
        }
    }
}

fn require_active(mr: &ModelRollout, verb: &str) -> Result<()> {
    let phase = mr.status.as_ref().and_then(|st| st.phase);
    if phase.is_some_and(Phase::is_active) {
        return Ok(());
    }
    Err(fail(format!(
        "nothing to {verb}: {} is {} (no rollout in progress)",
        mr.name_any(),
        phase.map_or("without status", Phase::as_str)
    )))
}

/// Waits (briefly) for the controller to record the request as handled and reports the result.
async fn acknowledge(
    s: &Session,
    name: &str,
    id: &str,
    handled: fn(&HandledOperations) -> Option<&str>,
    what: &str,
) -> Result<i32> {
    println!("{what} requested for modelrollout {name} (spec.operations id {id})");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let mr = s.get(name).await?;
        let st = mr.status.unwrap_or_default();
        if handled(&st.handled_operations) == Some(id) {
            println!(
                "controller acted: phase {}, {}",
                st.phase.map_or("-", Phase::as_str),
                st.message.unwrap_or_default()
            );
            return Ok(exit::OK);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("the controller has not acted on it yet (is it running?); the request stays in the spec");
    Ok(exit::OK)
}

async fn watch_status(
    s: &Session,
    name: &str,
    timeout: Option<jiff::SignedDuration>,
    output: Option<Output>,
) -> Result<i32> {
    s.get(name).await?; // a clear error before watching something that is not there
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(s.api(), config).boxed();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t.as_secs_f64()));
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                Ok(n) => n,
                Err(_) => {
                    eprintln!("timed out waiting for {name} to settle");
                    return Ok(exit::TIMEOUT);
                }
            },
            None => events.next().await,
        };
        let mr = match next {
            Some(Ok(watcher::Event::Apply(mr) | watcher::Event::InitApply(mr))) => mr,
            Some(Ok(watcher::Event::Delete(_))) => return Err(fail(format!("ModelRollout {name} was deleted"))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(fail(format!("watch: {e}"))),
            None => return Err(fail("watch ended")),
        };
        match output {
            Some(Output::Json) => {
                let mut v = serde_json::to_value(&mr).map_err(|e| fail(e.to_string()))?;
                strip_managed_fields(&mut v);
                println!("{v}");
            }
            Some(Output::Yaml) => {
                println!("---");
                print_object(&mr, Output::Yaml)?;
            }
            None => {
                let text = render::status(&mr, Timestamp::now(), s.style);
                if text != last {
                    if tty {
                        print!("\x1b[2J\x1b[H");
                    } else if !last.is_empty() {
                        println!("---");
                    }
                    print!("{text}");
                    last = text;
                }
            }
        }
        let _ = std::io::stdout().flush();
        if let Some(phase) = render::settled(&mr) {
            return Ok(phase_exit(Some(phase)));
        }
    }
}
