//! What `kubectl modelrollout` prints: pure functions from objects to text, so they are tested
//! without a cluster.

use std::fmt::Write;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use modelrollout_api::{
    Arm, Duration, ExperimentStatus, Hold, ModelRollout, ModelRolloutSpec, ModelRolloutStatus, Outcome, Phase,
    RewardDirection, Verdict,
};

/// ANSI styling, or none (not a terminal, or `NO_COLOR` set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    fn phase(self, phase: Option<Phase>) -> String {
        let text = phase.map_or("Unknown", Phase::as_str);
        match phase {
            Some(Phase::Promoted | Phase::Idle) => self.paint("32", text),
            Some(Phase::Progressing) => self.paint("36", text),
            Some(Phase::Paused) => self.paint("33", text),
            Some(Phase::RolledBack | Phase::Failed) => self.paint("31", text),
            None => text.to_string(),
        }
    }
    fn verdict(self, verdict: Verdict) -> String {
        let text = verdict.as_str();
        match verdict {
            Verdict::Pass => self.paint("32", text),
            Verdict::Fail | Verdict::Error => self.paint("31", text),
            Verdict::Inconclusive => self.paint("33", text),
        }
    }
}

/// kubectl's age format: `45s`, `12m`, `3h`, `5d`.
pub fn age(since: &Time, now: Timestamp) -> String {
    let secs = now.duration_since(since.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A share in percent: `50`, `1.172` (a key share's buckets give up to three decimals).
fn percent(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.5}")
    }
}

/// Lays rows out in columns separated by three spaces, like kubectl.
fn table(rows: &[Vec<String>], style: Style) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |i: usize| rows.iter().filter_map(|r| r.get(i)).map(|c| visible_len(c)).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let cell = if n == 0 { style.bold(cell) } else { cell.clone() };
            line.push_str(&cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - visible_len(row[i].as_str()) + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The text without ANSI colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn visible_len(s: &str) -> usize {
    strip_ansi(s).chars().count()
}

/// `kubectl modelrollout list`.
pub fn list(items: &[ModelRollout], all_namespaces: bool, now: Timestamp, style: Style) -> String {
    if items.is_empty() {
        return "No ModelRollouts found.\n".to_string();
    }
    let mut rows = vec![];
    let mut header = vec![];
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "PHASE", "STAGE", "WEIGHT", "STABLE", "CANDIDATE", "LAST ANALYSIS", "AGE"]);
    rows.push(header.into_iter().map(String::from).collect());
    for mr in items {
        let st = mr.status.clone().unwrap_or_default();
        let mut row = vec![];
        if all_namespaces {
            row.push(mr.namespace().unwrap_or_default());
        }
        row.push(mr.name_any());
        row.push(style.phase(st.phase));
        row.push(st.stage_name.clone().unwrap_or_else(|| "-".into()));
        row.push(format!("{}%", st.canary_weight));
        row.push(st.stable_version.clone().unwrap_or_else(|| "-".into()));
        row.push(st.candidate_version.clone().unwrap_or_else(|| "-".into()));
        row.push(st.last_analysis.as_ref().map_or("-".into(), |a| style.verdict(a.verdict)));
        row.push(mr.metadata.creation_timestamp.as_ref().map_or("-".into(), |t| age(t, now)));
        rows.push(row);
    }
    table(&rows, style)
}

/// `kubectl modelrollout status NAME`: what on-call needs to see at a glance.
pub fn status(mr: &ModelRollout, now: Timestamp, style: Style) -> String {
    let st = mr.status.clone().unwrap_or_default();
    let spec = &mr.spec;
    let mut out = String::new();
    let _ = writeln!(out, "{} {}/{}", style.bold("ModelRollout"), mr.namespace().unwrap_or_default(), mr.name_any());
    let reason = st.reason.as_deref().unwrap_or("-");
    let _ = writeln!(out, "Phase:      {}  ({reason})", style.phase(st.phase));
    if let Some(msg) = &st.message {
        let _ = writeln!(out, "Message:    {msg}");
    }
    if st.observed_generation.unwrap_or(0) < mr.metadata.generation.unwrap_or(0) {
        let _ = writeln!(out, "            (the controller has not yet seen the latest spec change)");
    }
    let stable = st.stable_version.as_deref().unwrap_or("-");
    match &st.candidate_version {
        Some(candidate) => {
            let _ = writeln!(out, "Model:      {}  stable {stable} -> candidate {candidate}", spec.model.name);
        }
        None => {
            let _ = writeln!(out, "Model:      {}  stable {stable}", spec.model.name);
        }
    }
    match &st.match_ {
        Some(m) => {
            let _ = writeln!(
                out,
                "Traffic:    candidate: requests matching {}; stable: the rest   (router: {})",
                m.describe(),
                spec.traffic_routing.kind().as_str()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Traffic:    candidate {}%, stable {}%, mirror {}%   (router: {})",
                st.canary_weight,
                100 - st.canary_weight,
                st.mirror_percent,
                spec.traffic_routing.kind().as_str()
            );
        }
    }
    match st.hold {
        Some(hold) => {
            let _ = writeln!(out, "Held:       {}", hold_text(hold));
        }
        None if spec.paused => {
            let _ = writeln!(out, "Paused:     spec.paused is true (`kubectl modelrollout resume` releases it)");
        }
        None => {}
    }
    if let Some(r) = &st.retained {
        let undo = match &st.undo {
            Some(u) => format!("undo to it under way since {} ago ({})", age(&Time(u.requested_at.0), now), u.reason),
            None => "`kubectl modelrollout undo` sends all traffic back to it".into(),
        };
        let _ = writeln!(
            out,
            "Retained:   {} ({}) until {} (in {}); {undo}",
            r.model.version,
            r.mode.as_str(),
            r.until.0,
            until_text(&r.until, now)
        );
    }
    if let Some(w) = &st.watch {
        let verdict = w.last_analysis.as_ref().map_or("no analysis yet", |run| run.verdict.as_str());
        let health = if w.failing { style.paint("31", "FAILING") } else { style.paint("32", "passing") };
        let _ = writeln!(out, "Watching:   {} after its promotion: {health} (last analysis: {verdict})", w.version);
    }
    for r in &st.retired {
        let removal =
            r.remove_at.as_ref().map_or("kept".to_string(), |at| format!("removed in {}", until_text(at, now)));
        let _ = writeln!(out, "Deprecated: {} {} ago; {removal}", r.version, age(&r.deprecated_at, now));
    }
    if st.promoting_without_gates {
        let _ =
            writeln!(out, "Gates:      none; stages advance on minDuration alone (analysis.promoteWithoutGates: true)");
    }

    // The stage timeline: done, current, pending; the stage it failed in when rolled back.
    let current = st.stage_index.map(|i| i as usize);
    let mut marks = vec![];
    for (i, stage) in spec.stages.iter().enumerate() {
        let traffic = match (&stage.match_, stage.mirror_percent) {
            (Some(m), _) => match m.key_share_percent() {
                Some(p) => format!("A/B {}% of keys", percent(p)),
                None => "A/B by match".to_string(),
            },
            (None, Some(m)) if stage.weight == 0 => format!("mirror {m}%"),
            _ => format!("{}%", stage.weight),
        };
        let label = format!("{} ({traffic})", stage.name);
        let mark = match (st.phase, current) {
            (Some(Phase::Promoted), _) => style.paint("32", &format!("✔ {label}")),
            (Some(Phase::RolledBack | Phase::Failed), Some(c)) if i == c => style.paint("31", &format!("✘ {label}")),
            (_, Some(c)) if i < c => style.paint("32", &format!("✔ {label}")),
            (Some(Phase::Progressing | Phase::Paused), Some(c)) if i == c => {
                let since =
                    st.stage_start_time.as_ref().map(|t| format!(", {}", age(&Time(t.0), now))).unwrap_or_default();
                style.paint("1;36", &format!("▶ {} ({traffic}{since})", stage.name))
            }
            _ => format!("· {label}"),
        };
        marks.push(mark);
    }
    let _ = writeln!(out, "Stages:     {}", marks.join("  "));
    if let Some(clock) = st.alert_free.as_ref().filter(|_| st.phase.is_some_and(Phase::is_active)) {
        let want = spec.stages.get(clock.stage_index as usize).and_then(|s| s.alert_free.as_ref());
        let labels = want.map_or(String::new(), |w| {
            w.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        });
        let left = clock.clean_at.0.duration_since(now);
        let left = if left.is_positive() {
            format!("{} left", age(&Time(now), clock.clean_at.0))
        } else if clock.checked_until.0 >= clock.clean_at.0 {
            "clean".to_string()
        } else {
            "clean once the next look confirms".to_string()
        };
        let reset = clock
            .reset
            .as_ref()
            .map_or(String::new(), |r| format!("; restarted by {} {} ago", r.detail, age(&Time(r.time.0), now)));
        let _ = writeln!(
            out,
            "Alert-free: {left} (no alert{} firing for {} since {} ago{reset})",
            if labels.is_empty() { String::new() } else { format!(" {{{labels}}}") },
            want.map_or("?".to_string(), |w| w.for_.to_string()),
            age(&Time(clock.since.0), now),
        );
    }
    if let Some(t) = &st.rollout_start_time {
        let _ = writeln!(out, "Started:    {} ago", age(t, now));
    }

    if let Some(run) = &st.last_analysis {
        let stage = spec.stages.get(run.stage_index as usize).map_or("?", |s| s.name.as_str());
        let _ = writeln!(
            out,
            "\nLast analysis: {} ({} ago, stage {stage}, {}; failures in a row {}/{}, inconclusive {}/{})",
            style.verdict(run.verdict),
            age(&Time(run.time.0), now),
            run.gate_set.describe(),
            st.consecutive_failures,
            spec.analysis.failure_limit,
            st.consecutive_inconclusive,
            spec.analysis.inconclusive_limit,
        );
        let mut rows =
            vec![["GATE", "VERDICT", "CANDIDATE", "STABLE", "LIMIT", "SAMPLES", "NOTE"].map(String::from).to_vec()];
        for g in &run.gates {
            rows.push(vec![
                format!("  {}", g.name),
                style.verdict(g.verdict),
                g.value.map_or("-".into(), number),
                g.stable_value.map_or("-".into(), number),
                g.limit.clone().unwrap_or_else(|| "-".into()),
                g.samples.map_or("-".into(), |s| s.to_string()),
                if g.verdict == Verdict::Pass { String::new() } else { g.message.clone() },
            ]);
        }
        rows[0][0] = "  GATE".into();
        out.push_str(&table(&rows, style));
        for g in &run.gates {
            let Some(ev) = &g.sequential else { continue };
            let diff = ev
                .difference_interval
                .as_ref()
                .map_or(String::new(), |d| format!("; candidate − stable in [{}, {}]", number(d.low), number(d.high)));
            let more = ev.more_samples.map_or(String::new(), |n| format!("; ~{n} more labelled samples to settle"));
            let _ = writeln!(
                out,
                "  {} (sequential, {}%): {}/{} candidate, {}/{} stable; candidate in [{}, {}]{diff}{more}",
                g.name,
                (ev.confidence * 1000.0).round() / 10.0,
                ev.candidate.events,
                ev.candidate.trials,
                ev.stable.events,
                ev.stable.trials,
                number(ev.candidate_interval.low),
                number(ev.candidate_interval.high),
            );
        }
    } else if st.phase.is_some_and(Phase::is_active) {
        let _ = writeln!(out, "\nLast analysis: none yet in this rollout");
    }

    if let Some(e) = &st.experiment {
        out.push_str(&experiment(e, &st, spec, style));
    }

    if let Some(a) = &st.acceptance {
        let verdict = a.verdict.map_or_else(|| style.paint("36", "Running"), |v| style.verdict(v));
        let _ = writeln!(
            out,
            "\nAcceptance ({}, before any traffic): {verdict}, started {} ago",
            a.version,
            age(&a.start_time, now)
        );
        if let Some(e) = &a.error {
            let _ = writeln!(out, "  {e}");
        }
        if !a.checks.is_empty() {
            let mut rows = vec![["  CHECK", "VERDICT", "CANDIDATE", "STABLE", "LIMIT"].map(String::from).to_vec()];
            for c in &a.checks {
                rows.push(vec![
                    format!("  {}", c.name),
                    style.verdict(c.verdict),
                    c.value.map_or("-".into(), number),
                    c.stable_value.map_or("-".into(), number),
                    c.limit.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            out.push_str(&table(&rows, style));
        }
        if let Some(g) = &a.golden_set {
            let _ = writeln!(out, "  golden set: {} rows, threshold {}", g.rows, number(g.threshold));
        }
        if let Some(l) = &a.load {
            let _ = writeln!(
                out,
                "  load: {} requests at {:.1} req/s, {} failed, p50 {:.1} ms, p95 {:.1} ms",
                l.requests,
                l.achieved_rate,
                l.errors,
                l.latency_p50_seconds * 1e3,
                l.latency_p95_seconds * 1e3
            );
        }
    }

    if !st.webhooks.is_empty() {
        let _ = writeln!(out, "\nWebhooks:");
        let mut rows =
            vec![["  NAME", "TYPE", "VERSION", "ANSWER", "ATTEMPTS", "AGE", "MESSAGE"].map(String::from).to_vec()];
        for w in &st.webhooks {
            let answer = w.code.map_or_else(|| "none".to_string(), |c| c.to_string());
            rows.push(vec![
                format!("  {}", w.name),
                w.kind.as_str().to_string(),
                w.version.clone(),
                if w.ok { style.paint("32", &answer) } else { style.paint("33", &answer) },
                w.attempts.to_string(),
                age(&w.time, now),
                w.message.clone(),
            ]);
        }
        out.push_str(&table(&rows, style));
    }

    if !st.conditions.is_empty() {
        let conds: Vec<String> = st.conditions.iter().map(|c| format!("{}={}", c.type_, c.status)).collect();
        let _ = writeln!(out, "\nConditions: {}", conds.join(" "));
    }
    if !st.history.is_empty() {
        let _ = writeln!(out, "\nRecent history:");
        out.push_str(&history_table(mr, now, style, 3));
    }
    out
}

/// An experiment's arms, rule, guardrails and reward.
fn experiment(e: &ExperimentStatus, st: &ModelRolloutStatus, spec: &ModelRolloutSpec, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nExperiment (stage {}):", e.stage);
    let share =
        e.key_share_percent.map_or_else(|| "matching requests".to_string(), |p| format!("{}% of keys", percent(p)));
    let rest =
        e.key_share_percent.map_or_else(|| "the rest".to_string(), |p| format!("{}% of keys", percent(100.0 - p)));
    let candidate = st.candidate_version.clone().unwrap_or_else(|| spec.model.version.clone());
    let stable = st.stable_version.clone().unwrap_or_else(|| "-".into());
    let rows = vec![
        ["  ARM", "VERSION", "SHARE", "RULE"].map(String::from).to_vec(),
        vec!["  candidate".into(), candidate, share, e.rule.clone()],
        vec!["  stable".into(), stable, rest, "every other request".into()],
    ];
    out.push_str(&table(&rows, style));
    let guardrails = if e.guardrails.is_empty() { "none".to_string() } else { e.guardrails.join(", ") };
    let _ = writeln!(out, "  Guardrails: {guardrails} (a failing gate sends every request to stable)");
    match &e.reward {
        Some(r) => {
            let ev = &r.evidence;
            let diff = ev.difference_interval.as_ref().map_or(String::new(), |d| {
                format!("; candidate − stable {} in [{}, {}]", number(r.effect), number(d.low), number(d.high))
            });
            let verdict = match r.winner {
                Some(Arm::Candidate) => style.paint("32", "winner: candidate"),
                Some(Arm::Stable) => style.paint("31", "winner: stable"),
                None => match ev.more_samples {
                    Some(n) => format!("no winner yet (~{n} more candidate samples to settle)"),
                    None => "no winner yet".to_string(),
                },
            };
            let direction = match r.direction {
                RewardDirection::Higher => "higher is better",
                RewardDirection::Lower => "lower is better",
            };
            let _ = writeln!(
                out,
                "  Reward {} ({direction}, {}%): candidate {}/{}, stable {}/{}{diff}; {verdict}",
                r.name,
                (ev.confidence * 1000.0).round() / 10.0,
                ev.candidate.events,
                ev.candidate.trials,
                ev.stable.events,
                ev.stable.trials,
            );
        }
        None if spec.analysis.reward.is_some() => {
            let _ = writeln!(out, "  Reward: not measured yet");
        }
        None => {
            let _ = writeln!(out, "  Reward: none (analysis.reward); the stage advances on its guardrails");
        }
    }
    out
}

fn outcome_text(o: Outcome, style: Style) -> String {
    let text = format!("{o:?}");
    match o {
        Outcome::Promoted => style.paint("32", &text),
        Outcome::RolledBack | Outcome::Failed | Outcome::Aborted | Outcome::Undone => style.paint("31", &text),
        Outcome::Superseded | Outcome::Deprecated | Outcome::Removed => text,
    }
}

fn history_table(mr: &ModelRollout, now: Timestamp, style: Style, limit: usize) -> String {
    let history = mr.status.as_ref().map(|s| s.history.as_slice()).unwrap_or_default();
    let mut rows = vec![["  VERSION", "OUTCOME", "WHEN", "REASON"].map(String::from).to_vec()];
    for h in history.iter().take(limit) {
        rows.push(vec![
            format!("  {}", h.version),
            outcome_text(h.outcome, style),
            format!("{} ago", age(&h.time, now)),
            h.reason.clone(),
        ]);
    }
    table(&rows, style)
}

/// `kubectl modelrollout history NAME`: each version's life (rolled out, promoted or not, undone,
/// deprecated, removed), newest first, then every entry.
pub fn history(mr: &ModelRollout, now: Timestamp, style: Style) -> String {
    if mr.status.as_ref().is_none_or(|s| s.history.is_empty()) {
        return format!("No rollouts recorded for {} yet.\n", mr.name_any());
    }
    let mut out = String::from("Versions:\n");
    out.push_str(&lives_table(mr, now, style));
    out.push_str("\nEntries:\n");
    out.push_str(&history_table(mr, now, style, usize::MAX));
    out
}

/// One row per version: when each step of its life happened (its latest rollout's).
fn lives_table(mr: &ModelRollout, now: Timestamp, style: Style) -> String {
    let history = mr.status.as_ref().map(|s| s.history.as_slice()).unwrap_or_default();
    let mut versions: Vec<&str> = Vec::new();
    for h in history {
        if !versions.contains(&h.version.as_str()) {
            versions.push(&h.version);
        }
    }
    let ago = |t: Option<&Time>| t.map_or_else(|| "-".to_string(), |t| format!("{} ago", age(t, now)));
    let mut rows =
        vec![["  VERSION", "ROLLED OUT", "ENDED", "HOW", "UNDONE", "DEPRECATED", "REMOVED"].map(String::from).to_vec()];
    for v in versions {
        // Newest first: the first entry of a kind is the latest.
        let of = |o: &[Outcome]| history.iter().find(|h| h.version == v && o.contains(&h.outcome));
        let ended =
            of(&[Outcome::Promoted, Outcome::RolledBack, Outcome::Aborted, Outcome::Failed, Outcome::Superseded]);
        rows.push(vec![
            format!("  {v}"),
            ago(ended.and_then(|h| h.started.as_ref())),
            ago(ended.map(|h| &h.time)),
            ended.map_or_else(|| "-".to_string(), |h| outcome_text(h.outcome, style)),
            ago(of(&[Outcome::Undone]).map(|h| &h.time)),
            ago(of(&[Outcome::Deprecated]).map(|h| &h.time)),
            ago(of(&[Outcome::Removed]).map(|h| &h.time)),
        ]);
    }
    table(&rows, style)
}

/// How long until `at`, or `now` once it passed.
fn until_text(at: &Time, now: Timestamp) -> String {
    if at.0 <= now { "now".into() } else { age(&Time(now), at.0) }
}

/// Where a rollout stands for a script: `None` while it is still moving (or the controller has not
/// seen the latest spec), otherwise its outcome.
pub fn settled(mr: &ModelRollout) -> Option<Phase> {
    let st = mr.status.as_ref()?;
    if st.observed_generation.unwrap_or(0) < mr.metadata.generation.unwrap_or(0) {
        return None;
    }
    st.phase.filter(|p| !p.is_active())
}

/// What holds a paused rollout and what releases it, for `status` and `resume`.
pub fn hold_text(hold: Hold) -> &'static str {
    match hold {
        Hold::Spec => "by spec.paused (`kubectl modelrollout resume` releases it)",
        Hold::Approval => "for approval (`kubectl modelrollout promote` releases it)",
        Hold::Inconclusive => {
            "by inconclusive analyses (a passing analysis releases it; `promote` or `abort` decide now)"
        }
        Hold::Confirmation => {
            "for a confirmPromotion webhook's 2xx (asked each interval; `kubectl modelrollout promote` releases it)"
        }
    }
}

/// Parses `--timeout` values like `90s`, `10m`.
pub fn parse_timeout(s: &str) -> Result<SignedDuration, String> {
    let d = Duration::parse(s).map_err(|e| format!("--timeout: {e}"))?;
    Ok(SignedDuration::try_from(d.get()).unwrap_or(SignedDuration::MAX))
}
