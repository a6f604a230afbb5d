//! Prometheus gates: the built-in queries over the sidecar's metric contract, custom PromQL
//! templates with safe substitution, and measurements for candidate and stable over one window.

use std::time::Duration;

use modelrollout_contract::metrics as m;
use modelrollout_contract::metrics::labels as l;
use prometheus_http_query::Client;
use prometheus_http_query::response::PromqlResult;

use crate::core::{self, GateDef, GateKind, GateObservation, Measurement};

/// Where and what to measure for one version.
#[derive(Clone, Debug)]
pub struct Selector {
    pub namespace: String,
    pub rollout: String,
    pub model: String,
    pub version: String,
    pub role: String,
    /// Label-based gates read the evidence service's joined counts (`--evidence-url` set) instead
    /// of each sidecar's own join.
    pub evidence: bool,
    /// What the error-rate gate counts as an error (the candidate's contract says, for both sides).
    pub errors: modelrollout_contract::ErrorCounting,
}

/// A PromQL string literal: every value a spec or object name supplies goes through this, so it can
/// never close the literal and inject PromQL.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Prometheus range duration from a window, to the millisecond (`30s`, `2750ms`): consecutive
/// analyses measure adjoining windows, and rounding would make them overlap or leave gaps.
pub fn range(window: Duration) -> String {
    let ms = window.as_millis().max(1);
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

impl Selector {
    fn matchers(&self) -> String {
        format!(
            "{}={},{}={},{}={}",
            l::NAMESPACE,
            quote(&self.namespace),
            l::MODEL,
            quote(&self.model),
            l::VERSION,
            quote(&self.version)
        )
    }

    /// Substitutes `$namespace $name $model $version $role $interval` in a custom template.
    /// Longest names first so `$name` does not eat the start of another variable.
    pub fn substitute(&self, template: &str, window: Duration) -> String {
        template
            .replace("$namespace", &quote(&self.namespace))
            .replace("$version", &quote(&self.version))
            .replace("$interval", &range(window))
            .replace("$model", &quote(&self.model))
            .replace("$name", &quote(&self.rollout))
            .replace("$role", &quote(&self.role))
    }

    /// (value query, sample-count query) for a gate. Every name and label value comes from the
    /// metric contract the sidecar registers with.
    pub fn queries(&self, kind: &GateKind, window: Duration) -> (String, String) {
        use m::Outcome::{FalseNegative, FalsePositive, TrueNegative, TruePositive};
        let s = self.matchers();
        let w = range(window);
        let scoring = format!("{}=~\"{}\"", l::ROUTE, m::Route::scoring_regex());
        let requests = format!("sum(increase({}{{{s},{scoring}}}[{w}]))", m::REQUESTS_TOTAL);
        let outcome = |o: m::Outcome| format!("{}=\"{}\"", l::OUTCOME, o.as_str());
        let either = |a: m::Outcome, b: m::Outcome| format!("{}=~\"{}|{}\"", l::OUTCOME, a.as_str(), b.as_str());
        // Label outcomes: from the evidence service (labels posted once, joined across every pod
        // and restart, counted by the rollout's namespace and name) or from the sidecars' own join.
        let counted = |which: String| {
            if self.evidence {
                let ls = format!("{s},{which}");
                evidence_increase(
                    modelrollout_contract::evidence::series::OUTCOMES,
                    &self.rollout,
                    &ls,
                    &w,
                    &[l::OUTCOME],
                )
            } else {
                format!("sum(increase({}{{{s},{which}}}[{w}]))", m::CONFUSION_TOTAL)
            }
        };
        let rate = |one: String, all: String| {
            (format!("({} or vector(0)) / {}", counted(one), counted(all.clone())), counted(all))
        };
        match kind {
            GateKind::ErrorRate => (
                format!(
                    "(sum(rate({r}{{{s},{scoring},{code}=~\"{errors}\"}}[{w}])) or vector(0)) / sum(rate({r}{{{s},{scoring}}}[{w}]))",
                    r = m::REQUESTS_TOTAL,
                    code = l::CODE,
                    errors = self.errors.code_regex(),
                ),
                requests,
            ),
            GateKind::LatencyP95 => (
                format!(
                    "histogram_quantile(0.95, sum by (le) (rate({h}_bucket{{{s},{scoring}}}[{w}]))) * 1000",
                    h = m::REQUEST_DURATION_SECONDS
                ),
                format!("sum(increase({h}_count{{{s},{scoring}}}[{w}]))", h = m::REQUEST_DURATION_SECONDS),
            ),
            GateKind::FalsePositiveRate => rate(outcome(FalsePositive), either(FalsePositive, TrueNegative)),
            GateKind::CaptureRate => rate(outcome(TruePositive), either(TruePositive, FalseNegative)),
            GateKind::Precision => rate(outcome(TruePositive), either(TruePositive, FalsePositive)),
            GateKind::Paired => self.paired_queries(&w, "only_candidate_right"),
            GateKind::ScoreDrift => {
                // Since the candidate started, not per window: a distribution needs its samples.
                use modelrollout_contract::evidence::series::{MATCHED, SCORE_PSI, labels as e};
                let ls = format!("{s},{}={}", e::ROLLOUT, quote(&self.rollout));
                (
                    format!("max({SCORE_PSI}{{{ls}}})"),
                    format!("sum({})", evidence_total(MATCHED, &ls, &[e::AGREEMENT, e::STABLE_VERSION])),
                )
            }
            GateKind::InputDrift => {
                // Since the candidate started, like score drift.
                use modelrollout_contract::evidence::series::{DRIFT_ROWS, FEATURE_PSI, labels as e};
                let ls = format!("{s},{}={}", e::ROLLOUT, quote(&self.rollout));
                (format!("max({FEATURE_PSI}{{{ls}}})"), format!("sum({})", evidence_total(DRIFT_ROWS, &ls, &[])))
            }
            GateKind::Agreement => {
                // The evidence service's matched requests, on the candidate's series. Without it
                // there is no such series: no data, inconclusive.
                use modelrollout_contract::evidence::series::{MATCHED, labels as e};
                let by = [e::AGREEMENT, e::STABLE_VERSION];
                let all = evidence_increase(MATCHED, &self.rollout, &s, &w, &by);
                let agree =
                    evidence_increase(MATCHED, &self.rollout, &format!("{s},{}=\"agree\"", e::AGREEMENT), &w, &by);
                (format!("({agree} or vector(0)) / {all}"), all)
            }
            GateKind::Custom { query, samples_query } => (
                self.substitute(query, window),
                samples_query.as_ref().map(|q| self.substitute(q, window)).unwrap_or(requests),
            ),
        }
    }
}

/// How far back an evidence total is looked for: longer than any gap in its scrapes that a
/// window should bridge (the service restarting, its pod moving).
pub const EVIDENCE_LOOKBACK: &str = "15m";

/// One series per version (and per value of `by`) of an evidence service counter: every replica
/// of the service exports the same totals from the shared store, and a replaced pod is a new
/// scrape target whose series starts at the whole total, so the series of every target are merged
/// by their own labels (`max`: the totals only grow) before anything is summed.
fn evidence_total(series: &str, matchers: &str, by: &[&str]) -> String {
    format!("max by ({}) ({series}{{{matchers}}})", evidence_keys(by))
}

fn evidence_keys(by: &[&str]) -> String {
    use modelrollout_contract::evidence::series::labels as e;
    let keys: Vec<&str> =
        [e::NAMESPACE, e::ROLLOUT, e::MODEL, e::VERSION, e::ROLE].into_iter().chain(by.iter().copied()).collect();
    keys.join(", ")
}

/// What an evidence service counter of `rollout` grew by over window `w`, summed: its stored
/// total at the window's end less its total at the start, each the last one scraped from any
/// target of the service within [`EVIDENCE_LOOKBACK`] (a series born in the window counts whole).
/// Exact, unlike `increase`, which cannot see what a replaced pod's first scrape already holds
/// (the labels posted while it restarted) and extrapolates at the window's edges.
fn evidence_increase(series: &str, rollout: &str, matchers: &str, w: &str, by: &[&str]) -> String {
    use modelrollout_contract::evidence::series::labels as e;
    let ls = format!("{matchers},{}={}", e::ROLLOUT, quote(rollout));
    let keys = evidence_keys(by);
    let end = format!("max by ({keys}) (last_over_time({series}{{{ls}}}[{EVIDENCE_LOOKBACK}]))");
    let start = format!("max by ({keys}) (last_over_time({series}{{{ls}}}[{EVIDENCE_LOOKBACK}] offset {w}))");
    format!("sum(({end} - {start}) or {end})")
}

impl Selector {
    /// The share of this candidate's labelled matched requests with paired outcome `outcome`, and
    /// their count (the evidence service's series, on the candidate's version).
    fn paired_queries(&self, w: &str, outcome: &str) -> (String, String) {
        use modelrollout_contract::evidence::series::{PAIRED, labels as e};
        let s = self.matchers();
        let by = [e::OUTCOME, e::STABLE_VERSION];
        let all = evidence_increase(PAIRED, &self.rollout, &s, w, &by);
        let one = evidence_increase(PAIRED, &self.rollout, &format!("{s},{}=\"{outcome}\"", e::OUTCOME), w, &by);
        (format!("({one} or vector(0)) / {all}"), all)
    }
}

/// Prometheus' series of alerts, one per alert and state (`pending`, `firing`).
pub const ALERTS: &str = "ALERTS";

/// The PromQL for the matching alerts that fired in the last `window`: one series per
/// `alertname`. Every label value goes through [`quote`]; the label names are checked by the CRD.
pub fn fired_alerts_query(ask: &core::AlertQuery, window: Duration) -> String {
    let mut matchers = vec!["alertstate=\"firing\"".to_string()];
    matchers.extend(ask.match_labels.iter().map(|(k, v)| format!("{k}={}", quote(v))));
    format!("count by (alertname) (max_over_time({ALERTS}{{{}}}[{}]))", matchers.join(","), range(window))
}

/// Which matching alerts fired between `ask.since` and `now`; any failure is `Unavailable` (the
/// gap is not known clean).
pub async fn fired_alerts(
    client: &Client,
    ask: &core::AlertQuery,
    now: jiff::Timestamp,
    timeout: Duration,
) -> core::AlertObservation {
    // At least a second, so a look right after the last still reads the latest sample.
    let window = now.duration_since(ask.since).unsigned_abs().max(Duration::from_secs(1));
    let res = match instant(client, &fired_alerts_query(ask, window), timeout).await {
        Ok(res) => res,
        Err(e) => return core::AlertObservation::Unavailable(e),
    };
    let Some(v) = res.data().as_vector() else {
        return core::AlertObservation::Unavailable("the query did not return a vector".into());
    };
    let mut names: Vec<String> =
        v.iter().map(|s| s.metric().get("alertname").cloned().unwrap_or_else(|| "(unnamed)".into())).collect();
    names.sort();
    names.dedup();
    core::AlertObservation::Fired(names)
}

/// Runs one instant query within `timeout` (Prometheus's own, and ours a little later).
async fn instant(client: &Client, query: &str, timeout: Duration) -> Result<PromqlResult, String> {
    let fut = client.query(query).timeout(timeout.as_millis() as i64).get();
    tokio::time::timeout(timeout + Duration::from_millis(500), fut)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
        .map_err(|e| e.to_string())
}

/// Runs one instant query that must return at most one sample.
async fn scalar(client: &Client, query: &str, timeout: Duration) -> Result<Option<f64>, String> {
    let res = instant(client, query, timeout).await?;
    if let Some(v) = res.data().as_vector() {
        return match v.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.sample().value())),
            many => Err(format!("{} series returned; a gate query must return one", many.len())),
        };
    }
    if let Some(s) = res.data().as_scalar() {
        return Ok(Some(s.value()));
    }
    Err("the query did not return a vector or scalar".into())
}

/// Measures one version: value and samples, each failure its own variant.
pub async fn measure(
    client: &Client,
    sel: &Selector,
    kind: &GateKind,
    window: Duration,
    timeout: Duration,
) -> Measurement {
    measure_queries(client, sel.queries(kind, window), timeout).await
}

/// Measures a (value, samples) pair of queries.
async fn measure_queries(client: &Client, (value_q, samples_q): (String, String), timeout: Duration) -> Measurement {
    let (value, samples) = tokio::join!(scalar(client, &value_q, timeout), scalar(client, &samples_q, timeout));
    match (value, samples) {
        (Err(e), _) | (_, Err(e)) => Measurement::QueryError(e),
        (Ok(None), _) => Measurement::NoData,
        (Ok(Some(v)), samples) => {
            let n = samples.ok().flatten().filter(|n| n.is_finite() && *n >= 0.0).unwrap_or(0.0);
            Measurement::sample(v, n.round() as u64)
        }
    }
}

/// Measures every gate for candidate and stable over the same window, concurrently.
pub async fn observe(
    client: &Client,
    defs: &[GateDef],
    candidate: &Selector,
    stable: &Selector,
    window: Duration,
    timeout: Duration,
) -> Vec<GateObservation> {
    let futs = defs.iter().map(|d| observe_one(client, d, d.is_relative(), candidate, stable, window, timeout));
    futures::future::join_all(futs).await
}

/// Measures one definition for both arms, whatever its limits: an experiment's reward, which
/// always compares candidate with stable.
pub async fn observe_both(
    client: &Client,
    def: &GateDef,
    candidate: &Selector,
    stable: &Selector,
    window: Duration,
    timeout: Duration,
) -> GateObservation {
    observe_one(client, def, true, candidate, stable, window, timeout).await
}

async fn observe_one(
    client: &Client,
    d: &GateDef,
    both: bool,
    candidate: &Selector,
    stable: &Selector,
    window: Duration,
    timeout: Duration,
) -> GateObservation {
    let (c, s) = if d.kind == GateKind::Paired {
        // Both shares come from the candidate's paired series, over the same pairs.
        let stable_side = candidate.paired_queries(&range(window), "only_stable_right");
        tokio::join!(
            measure(client, candidate, &d.kind, window, timeout),
            measure_queries(client, stable_side, timeout)
        )
    } else if both {
        tokio::join!(
            measure(client, candidate, &d.kind, window, timeout),
            measure(client, stable, &d.kind, window, timeout)
        )
    } else {
        (measure(client, candidate, &d.kind, window, timeout).await, Measurement::NoData)
    };
    GateObservation { gate: d.name.clone(), candidate: c, stable: s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_keep_the_window_to_the_millisecond() {
        assert_eq!(range(Duration::from_secs(30)), "30s");
        assert_eq!(range(Duration::from_millis(2750)), "2750ms");
        assert_eq!(range(Duration::from_micros(7_000_900)), "7s", "below a millisecond is dropped");
        assert_eq!(range(Duration::ZERO), "1ms", "never an empty range");
    }

    fn sel() -> Selector {
        Selector {
            namespace: "ns".into(),
            rollout: "fraud".into(),
            model: "fraud".into(),
            version: "v2\"} or vector(1) #".into(),
            role: "canary".into(),
            evidence: false,
            errors: Default::default(),
        }
    }

    #[test]
    fn the_alert_look_counts_matching_firing_alerts_over_the_time_since_the_last() {
        let ask = core::AlertQuery {
            match_labels: [("team".to_string(), "fraud\"} or vector(1) #".to_string())].into(),
            since: jiff::Timestamp::UNIX_EPOCH,
        };
        let q = fired_alerts_query(&ask, Duration::from_millis(12_500));
        assert_eq!(
            q,
            r#"count by (alertname) (max_over_time(ALERTS{alertstate="firing",team="fraud\"} or vector(1) #"}[12500ms]))"#
        );
    }

    #[test]
    fn values_are_escaped_string_literals() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        let q = sel().substitute("sum(x{version=$version, ns=$namespace}[$interval]) / $name", Duration::from_secs(30));
        assert_eq!(q, r#"sum(x{version="v2\"} or vector(1) #", ns="ns"}[30s]) / "fraud""#);
    }

    #[test]
    fn built_in_queries_read_the_sidecar_contract() {
        let s = Selector { version: "v2".into(), ..sel() };
        let (v, n) = s.queries(&GateKind::FalsePositiveRate, Duration::from_secs(60));
        assert!(v.contains("modelrollout_sidecar_confusion_total{") && v.contains(r#"outcome="fp""#), "{v}");
        assert!(v.contains(r#"version="v2""#) && v.contains("[60s]"));
        assert!(n.contains(r#"outcome=~"fp|tn""#));
        let (v, _) = s.queries(&GateKind::LatencyP95, Duration::from_secs(60));
        assert!(v.starts_with("histogram_quantile(0.95") && v.ends_with("* 1000"));
        // With the evidence service, the label gates read its joined outcomes of this rollout.
        let e = Selector { evidence: true, ..s };
        let (v, n) = e.queries(&GateKind::CaptureRate, Duration::from_secs(60));
        assert!(v.contains("modelrollout_evidence_outcomes_total{") && v.contains(r#"rollout="fraud""#), "{v}");
        assert!(v.contains(r#"outcome="tp""#) && n.contains(r#"outcome=~"tp|fn""#), "{v} {n}");
        // The evidence service's stored totals, the series of every scrape target of it (replicas,
        // a replaced pod) merged by their own labels: the total at the window's end less at its start.
        let merged = "sum((max by (namespace, rollout, model, version, role, outcome) (last_over_time(modelrollout_evidence_outcomes_total{";
        assert!(n.starts_with(merged) && n.contains("[15m] offset 60s)))") && n.ends_with("[15m])))"), "{n}");
        let (v, _) = e.queries(&GateKind::ErrorRate, Duration::from_secs(60));
        assert!(v.contains("modelrollout_sidecar_requests_total{") && !v.contains("rollout="), "{v}");
        assert!(v.contains(r#"code=~"5..""#), "{v}");
        // Load shed counts when the contract says so.
        let shed = Selector {
            errors: modelrollout_contract::ErrorCounting { shed_load: modelrollout_contract::ShedLoad::Error },
            ..e.clone()
        };
        let (v, _) = shed.queries(&GateKind::ErrorRate, Duration::from_secs(60));
        assert!(v.contains(r#"code=~"5..|429""#), "{v}");
        let (v, n) = e.queries(&GateKind::Precision, Duration::from_secs(60));
        assert!(v.contains(r#"outcome="tp""#) && n.contains(r#"outcome=~"tp|fp""#), "{v} {n}");
        let (v, n) = e.queries(&GateKind::Paired, Duration::from_secs(60));
        assert!(
            v.contains("modelrollout_evidence_paired_outcomes_total{")
                && v.contains(r#"outcome="only_candidate_right""#),
            "{v}"
        );
        assert!(n.contains("modelrollout_evidence_paired_outcomes_total{") && !n.contains("outcome="), "{n}");
        let (v, n) = e.queries(&GateKind::ScoreDrift, Duration::from_secs(60));
        assert!(v.starts_with("max(modelrollout_evidence_score_psi{") && !v.contains('['), "{v}");
        assert!(n.starts_with("sum(max by (namespace, rollout, model, version, role, agreement, stable_version) (modelrollout_evidence_matched_total{"), "{n}");
        let (v, n) = e.queries(&GateKind::InputDrift, Duration::from_secs(60));
        assert!(v.starts_with("max(modelrollout_evidence_feature_psi{") && v.contains(r#"version="v2""#), "{v}");
        assert!(
            n.starts_with(
                "sum(max by (namespace, rollout, model, version, role) (modelrollout_evidence_drift_rows_total{"
            ) && !n.contains('['),
            "{n}"
        );
        let (v, n) = e.queries(&GateKind::Agreement, Duration::from_secs(60));
        assert!(v.contains("modelrollout_evidence_matched_total{") && v.contains(r#"agreement="agree""#), "{v}");
        assert!(
            n.starts_with("sum((max by (namespace, rollout, model, version, role, agreement, stable_version) (last_over_time(modelrollout_evidence_matched_total{") && n.contains(r#"version="v2""#),
            "{n}"
        );
    }
}
