//! What a new prediction or a new label adds to the exported counts: a pure function of the new
//! thing and what is already stored about its request id, so every rule is tested without a
//! database. The store applies the deltas in the transaction that stores the new thing.
//!
//! The rules, each counted exactly once whatever the order of arrival:
//! * a prediction counts under its own version (`predictions`);
//! * a label joined to a prediction counts its outcome (tp, fp, tn, fn), the join, and the delay
//!   from the prediction to the label, under that prediction's version: when the second of the
//!   two arrives;
//! * a *matched* request (one request id scored by stable and by a candidate, as every mirrored
//!   request is) counts agreement and the score difference under the candidate's version, with the
//!   stable version as `peer`: when the second prediction arrives;
//! * a labelled matched request counts its paired outcome (both right, only the candidate right,
//!   only stable right, both wrong): when the last of the three arrives.

use modelrollout_contract::Role;
use modelrollout_contract::evidence::{Outcome, Paired};

/// A prediction as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub model: String,
    pub version: String,
    pub role: Role,
    pub time_ms: i64,
    pub decision: bool,
    pub score: f64,
}

/// A label as stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoredLabel {
    pub label: bool,
    /// When the outcome was known (or received, if the poster did not say).
    pub time_ms: i64,
}

/// The counted series, by the name the store keeps (`counts.series`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Series {
    Predictions,
    LabelsJoined,
    Outcomes,
    LabelDelay,
    Matched,
    Paired,
    ScoreDifference,
    /// The scores of matched requests in tenths of [0, 1], the candidate's (`c0`..`c9`) and
    /// stable's (`s0`..`s9`), on the candidate's key: what score drift (PSI) is computed from.
    ScoreBins,
}

impl Series {
    pub const ALL: [Series; 8] = [
        Series::Predictions,
        Series::LabelsJoined,
        Series::Outcomes,
        Series::LabelDelay,
        Series::Matched,
        Series::Paired,
        Series::ScoreDifference,
        Series::ScoreBins,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::Predictions => "predictions",
            Series::LabelsJoined => "labels_joined",
            Series::Outcomes => "outcomes",
            Series::LabelDelay => "label_delay",
            Series::Matched => "matched",
            Series::Paired => "paired",
            Series::ScoreDifference => "score_difference",
            Series::ScoreBins => "score_bins",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The label delay histogram's upper bounds, in seconds: a minute to the 7-day default horizon.
pub const DELAY_BUCKETS: [f64; 9] =
    [60.0, 600.0, 3600.0, 21_600.0, 86_400.0, 172_800.0, 345_600.0, 604_800.0, f64::INFINITY];

/// The `detail` of a delay: its bucket's upper bound, as the store keeps it.
pub fn delay_detail(seconds: f64) -> &'static str {
    const NAMES: [&str; 9] = ["60", "600", "3600", "21600", "86400", "172800", "345600", "604800", "+Inf"];
    let i = DELAY_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(DELAY_BUCKETS.len() - 1);
    NAMES[i]
}

/// The score bins: a score in [0, 1] falls in tenth `i` (1.0 in the last).
pub const SCORE_BINS: usize = 10;
pub const CANDIDATE_BINS: [&str; SCORE_BINS] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"];
pub const STABLE_BINS: [&str; SCORE_BINS] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];

pub fn score_bin(score: f64) -> usize {
    ((score.clamp(0.0, 1.0) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1)
}

/// The population stability index of `actual` against `expected` (counts per bin), each share
/// smoothed by half a count so that an empty bin is not infinitely surprising.
pub fn psi(actual: &[i64], expected: &[i64]) -> f64 {
    psi_against(actual, &smoothed_shares(expected))
}

/// Each bin's share of the counts, smoothed by half a count.
fn smoothed_shares(counts: &[i64]) -> Vec<f64> {
    let (n, k) = (counts.iter().sum::<i64>() as f64, counts.len() as f64);
    counts.iter().map(|&c| (c as f64 + 0.5) / (n + 0.5 * k)).collect()
}

/// The population stability index of `actual` (counts per bin) against a reference's shares
/// (`expected`, summing to 1): the counts smoothed by half a count, the shares floored at 1e-4, so
/// that an empty bin is not infinitely surprising.
pub fn psi_against(actual: &[i64], expected: &[f64]) -> f64 {
    smoothed_shares(actual)
        .into_iter()
        .zip(expected)
        .map(|(pa, &e)| {
            let pe = e.max(1e-4);
            (pa - pe) * (pa / pe).ln()
        })
        .sum()
}

/// Where a count goes: the version it is counted under, the series, a detail from a fixed list,
/// and the peer (the stable version of a matched request's candidate; empty otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub model: String,
    pub version: String,
    pub role: Role,
    pub series: Series,
    pub detail: &'static str,
    pub peer: String,
}

/// A change to one count: `n` more, and `total` added to its running sum.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    pub key: Key,
    pub n: i64,
    pub total: f64,
}

fn delta(p: &Prediction, series: Series, detail: &'static str, peer: &str, total: f64) -> Delta {
    Delta {
        key: Key {
            model: p.model.clone(),
            version: p.version.clone(),
            role: p.role,
            series,
            detail,
            peer: peer.into(),
        },
        n: 1,
        total,
    }
}

/// The join of one label to one prediction.
fn joined(p: &Prediction, l: StoredLabel) -> [Delta; 3] {
    let delay = (l.time_ms - p.time_ms).max(0) as f64 / 1e3;
    [
        delta(p, Series::Outcomes, Outcome::of(p.decision, l.label).as_str(), "", 0.0),
        delta(p, Series::LabelsJoined, "", "", 0.0),
        delta(p, Series::LabelDelay, delay_detail(delay), "", delay),
    ]
}

/// The (candidate, stable) of two predictions of one request, if they are such a pair.
fn pair<'a>(a: &'a Prediction, b: &'a Prediction) -> Option<(&'a Prediction, &'a Prediction)> {
    match (a.role, b.role) {
        (Role::Stable, Role::Stable) => None,
        (Role::Stable, _) => Some((b, a)),
        (_, Role::Stable) => Some((a, b)),
        _ => None,
    }
}

fn paired(candidate: &Prediction, stable: &Prediction, l: StoredLabel) -> Delta {
    let right = |p: &Prediction| Outcome::of(p.decision, l.label).right();
    delta(candidate, Series::Paired, Paired::of(right(candidate), right(stable)).as_str(), &stable.version, 0.0)
}

/// What a new prediction adds, given the other predictions of its request id (other versions)
/// and its label, if one is stored.
pub fn on_prediction(new: &Prediction, others: &[Prediction], label: Option<StoredLabel>) -> Vec<Delta> {
    let mut out = vec![delta(new, Series::Predictions, "", "", 0.0)];
    if let Some(l) = label {
        out.extend(joined(new, l));
    }
    for other in others {
        let Some((c, s)) = pair(new, other) else { continue };
        let agreement = if c.decision == s.decision { "agree" } else { "disagree" };
        out.push(delta(c, Series::Matched, agreement, &s.version, 0.0));
        out.push(delta(c, Series::ScoreDifference, "", &s.version, c.score - s.score));
        out.push(delta(c, Series::ScoreBins, CANDIDATE_BINS[score_bin(c.score)], &s.version, 0.0));
        out.push(delta(c, Series::ScoreBins, STABLE_BINS[score_bin(s.score)], &s.version, 0.0));
        if let Some(l) = label {
            out.push(paired(c, s, l));
        }
    }
    out
}

/// What a new label adds, given the predictions of its request id.
pub fn on_label(label: StoredLabel, predictions: &[Prediction]) -> Vec<Delta> {
    let mut out = Vec::new();
    for (i, p) in predictions.iter().enumerate() {
        out.extend(joined(p, label));
        for q in &predictions[i + 1..] {
            if let Some((c, s)) = pair(p, q) {
                out.push(paired(c, s, label));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn p(version: &str, role: Role, decision: bool, score: f64) -> Prediction {
        Prediction { model: "fraud".into(), version: version.into(), role, time_ms: 1_000, decision, score }
    }

    fn sum(deltas: impl IntoIterator<Item = Delta>) -> BTreeMap<(String, Series, &'static str, String), (i64, f64)> {
        let mut m = BTreeMap::new();
        for d in deltas {
            let e = m.entry((d.key.version, d.key.series, d.key.detail, d.key.peer)).or_insert((0, 0.0));
            e.0 += d.n;
            e.1 += d.total;
        }
        m
    }

    /// Stable, candidate and label in every order of arrival: the same counts, each once.
    #[test]
    fn every_order_of_arrival_counts_the_same_once() {
        let stable = p("v1", Role::Stable, true, 0.9);
        let cand = p("v2", Role::Shadow, false, 0.4);
        let label = StoredLabel { label: true, time_ms: 61_000 };
        #[derive(Clone, Copy)]
        enum Arrival {
            S,
            C,
            L,
        }
        let orders = [
            [Arrival::S, Arrival::C, Arrival::L],
            [Arrival::S, Arrival::L, Arrival::C],
            [Arrival::C, Arrival::S, Arrival::L],
            [Arrival::C, Arrival::L, Arrival::S],
            [Arrival::L, Arrival::S, Arrival::C],
            [Arrival::L, Arrival::C, Arrival::S],
        ];
        let mut results = Vec::new();
        for order in orders {
            let (mut stored, mut labelled, mut deltas) = (Vec::<Prediction>::new(), None, Vec::new());
            for a in order {
                match a {
                    Arrival::S | Arrival::C => {
                        let new = if matches!(a, Arrival::S) { stable.clone() } else { cand.clone() };
                        deltas.extend(on_prediction(&new, &stored, labelled));
                        stored.push(new);
                    }
                    Arrival::L => {
                        deltas.extend(on_label(label, &stored));
                        labelled = Some(label);
                    }
                }
            }
            results.push(sum(deltas));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:#?}");
        let counts = &results[0];
        let get = |v: &str, s: Series, d: &'static str, peer: &str| counts.get(&(v.into(), s, d, peer.into())).copied();
        assert_eq!(get("v1", Series::Predictions, "", ""), Some((1, 0.0)));
        assert_eq!(get("v2", Series::Predictions, "", ""), Some((1, 0.0)));
        assert_eq!(get("v1", Series::Outcomes, "tp", ""), Some((1, 0.0)));
        assert_eq!(get("v2", Series::Outcomes, "fn", ""), Some((1, 0.0)));
        assert_eq!(get("v2", Series::LabelDelay, "60", ""), Some((1, 60.0)), "60 s after: the 60 s bucket (le)");
        assert_eq!(get("v2", Series::Matched, "disagree", "v1"), Some((1, 0.0)));
        assert_eq!(get("v2", Series::Paired, "only_stable_right", "v1"), Some((1, 0.0)));
        let (n, diff) = get("v2", Series::ScoreDifference, "", "v1").unwrap();
        assert_eq!(n, 1);
        assert!((diff - (0.4 - 0.9)).abs() < 1e-12);
        assert!(get("v1", Series::Matched, "disagree", "v2").is_none(), "counted on the candidate only");
    }

    #[test]
    fn matched_scores_are_binned_and_psi_reads_a_shift() {
        let d = on_prediction(&p("v2", Role::Shadow, true, 0.95), &[p("v1", Role::Stable, false, 0.05)], None);
        let bins: Vec<&str> = d.iter().filter(|x| x.key.series == Series::ScoreBins).map(|x| x.key.detail).collect();
        assert_eq!(bins, ["c9", "s0"]);
        assert_eq!((score_bin(0.0), score_bin(0.1), score_bin(1.0)), (0, 1, 9));
        let same = [100, 200, 300, 200, 100, 50, 20, 10, 10, 10];
        assert!(psi(&same, &same).abs() < 1e-12);
        let shifted = [10, 10, 20, 50, 100, 200, 300, 200, 100, 10];
        assert!(psi(&shifted, &same) > 1.0, "{}", psi(&shifted, &same));
        assert!(psi(&[0; 10], &same) > 0.0, "empty bins are smoothed, not infinite");
    }

    #[test]
    fn input_psi_is_near_zero_on_the_reference_and_large_on_a_shift() {
        let shares = [0.1; 10];
        assert!(psi_against(&[1_000; 10], &shares) < 1e-9);
        // Everything in the top bin: (1 - 0.1) ln(~1/0.1) + 9 small terms, about 2.3.
        let mut shifted = [0; 10];
        shifted[9] = 10_000;
        assert!(psi_against(&shifted, &shares) > 2.0, "{}", psi_against(&shifted, &shares));
        // A moderate shift: half the mass moves from bin 0 to bin 1.
        let mut moved = [1_000; 10];
        moved[0] = 500;
        moved[1] = 1_500;
        let v = psi_against(&moved, &shares);
        assert!((0.05..0.2).contains(&v), "{v}");
    }

    #[test]
    fn two_stables_or_two_candidates_are_not_a_pair_and_delays_fall_in_their_buckets() {
        let d = on_prediction(&p("v1", Role::Stable, true, 0.9), &[p("v0", Role::Stable, true, 0.8)], None);
        assert_eq!(d.len(), 1);
        let d = on_prediction(&p("v3", Role::Canary, true, 0.9), &[p("v2", Role::Shadow, true, 0.8)], None);
        assert_eq!(d.len(), 1);
        assert_eq!(delay_detail(0.0), "60");
        assert_eq!(delay_detail(60.0), "60");
        assert_eq!(delay_detail(60.5), "600");
        assert_eq!(delay_detail(7.0 * 86_400.0), "604800");
        assert_eq!(delay_detail(30.0 * 86_400.0), "+Inf");
    }
}
