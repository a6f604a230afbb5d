//! The store's rules against both databases it runs on: SQLite (a file, as in the service's pod)
//! and a real PostgreSQL server (started by `tests/postgres/start.sh`, which `tests/run.sh` runs;
//! its URL in `MODELROLLOUT_POSTGRES_URL`). Each PostgreSQL test works in a database of its own.

use modelrollout_contract::Role;
use modelrollout_contract::evidence::{Label, PredictionBatch, PredictionRecord};
use modelrollout_evidence::store::{Count, Store};
use modelrollout_evidence::tally::Series;

const NOW: i64 = 1_780_000_000_000;
const DAY: i64 = 86_400_000;

/// A store on a fresh SQLite file (kept in a temporary directory for the test's life).
async fn sqlite() -> (Store, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/evidence.db", dir.0.display());
    (Store::open(&url).await.unwrap(), dir)
}

/// A store on a fresh database (`name`) of the PostgreSQL server the test scripts started.
async fn postgres(name: &str) -> Store {
    let base = std::env::var("MODELROLLOUT_POSTGRES_URL")
        .expect("MODELROLLOUT_POSTGRES_URL (bash tests/postgres/start.sh prints it; tests/run.sh runs it)");
    let base = base.trim_end_matches('/');
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    Store::open(&format!("{base}/{name}")).await.unwrap()
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("evidence-store-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn batch(version: &str, role: Role, records: &[(&str, bool, f64)]) -> PredictionBatch {
    PredictionBatch {
        namespace: "team-a".into(),
        rollout: "fraud".into(),
        model: "fraud".into(),
        version: version.into(),
        role,
        records: records
            .iter()
            .map(|(id, decision, score)| PredictionRecord {
                request_id: id.to_string(),
                time_ms: NOW - 3_600_000,
                decision: *decision,
                score: *score,
                bins: vec![],
            })
            .collect(),
    }
}

fn label(id: &str, label: bool) -> Label {
    Label { request_id: id.into(), label, time_ms: Some(NOW) }
}

/// The counts as (version, series, detail, peer) -> n.
async fn counts(store: &Store) -> std::collections::BTreeMap<(String, String, String, String), i64> {
    let snap = store.snapshot().await.unwrap();
    snap.counts
        .into_iter()
        .map(|Count { key, n, .. }| ((key.version, key.series.as_str().into(), key.detail.into(), key.peer), n))
        .collect()
}

fn n(
    c: &std::collections::BTreeMap<(String, String, String, String), i64>,
    v: &str,
    s: Series,
    d: &str,
    peer: &str,
) -> i64 {
    c.get(&(v.into(), s.as_str().into(), d.into(), peer.into())).copied().unwrap_or(0)
}

/// Stable and shadow score the same 4 mirrored requests; labels come in between and after; every
/// batch is sent twice (a sidecar retrying after a timeout), a label twice, and one label is
/// contradicted later. Every count is the one the rules give, once.
async fn joins_once_whatever_the_order_and_the_retries(store: &Store) {
    let stable =
        batch("v1", Role::Stable, &[("r1", true, 0.9), ("r2", false, 0.1), ("r3", true, 0.8), ("r4", false, 0.2)]);
    let shadow =
        batch("v2", Role::Shadow, &[("r1", true, 0.7), ("r2", true, 0.6), ("r3", true, 0.9), ("r4", false, 0.3)]);
    let first = store.record_predictions(&stable).await.unwrap();
    assert_eq!((first.recorded, first.duplicates), (4, 0));
    let again = store.record_predictions(&stable).await.unwrap();
    assert_eq!((again.recorded, again.duplicates), (0, 4), "a retried batch adds nothing");
    // Two labels before the candidate's predictions, one of them for a request nobody scored yet.
    let a = store
        .record_labels("team-a", "fraud", &[label("r1", true), label("r2", false), label("r9", true)], NOW, 7 * DAY)
        .await
        .unwrap();
    assert_eq!((a.recorded, a.joined), (3, 2), "{a:?}");
    store.record_predictions(&shadow).await.unwrap();
    store.record_predictions(&shadow).await.unwrap();
    let b = store
        .record_labels(
            "team-a",
            "fraud",
            &[label("r3", false), label("r4", false), label("r1", true), label("r2", true)],
            NOW,
            7 * DAY,
        )
        .await
        .unwrap();
    assert_eq!((b.recorded, b.duplicates, b.conflicting), (2, 1, 1), "{b:?}");
    assert_eq!(b.conflicts, vec!["r2".to_string()], "the first label of r2 stands");

    let c = counts(store).await;
    assert_eq!(n(&c, "v1", Series::Predictions, "", ""), 4);
    assert_eq!(n(&c, "v2", Series::Predictions, "", ""), 4);
    // Labels: r1 fraud, r2 legit, r3 legit, r4 legit.
    // Stable decided T F T F: tp (r1), tn (r2), fp (r3), tn (r4).
    assert_eq!(
        [
            n(&c, "v1", Series::Outcomes, "tp", ""),
            n(&c, "v1", Series::Outcomes, "fp", ""),
            n(&c, "v1", Series::Outcomes, "tn", "")
        ],
        [1, 1, 2]
    );
    // The shadow decided T T T F: tp, fp, fp, tn.
    assert_eq!(
        [
            n(&c, "v2", Series::Outcomes, "tp", ""),
            n(&c, "v2", Series::Outcomes, "fp", ""),
            n(&c, "v2", Series::Outcomes, "tn", "")
        ],
        [1, 2, 1]
    );
    assert_eq!(n(&c, "v1", Series::LabelsJoined, "", ""), 4);
    assert_eq!(n(&c, "v2", Series::LabelsJoined, "", ""), 4);
    // Matched on the candidate, against v1: agree on r1, r3, r4; disagree on r2.
    assert_eq!(n(&c, "v2", Series::Matched, "agree", "v1"), 3);
    assert_eq!(n(&c, "v2", Series::Matched, "disagree", "v1"), 1);
    assert_eq!(n(&c, "v2", Series::Paired, "both_right", "v1"), 2, "r1, r4");
    assert_eq!(n(&c, "v2", Series::Paired, "only_stable_right", "v1"), 1, "r2");
    assert_eq!(n(&c, "v2", Series::Paired, "both_wrong", "v1"), 1, "r3");
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.waiting, vec![("team-a".to_string(), "fraud".to_string(), 1)], "r9 waits for its prediction");
    assert!(snap.dropped.contains(&("team-a".into(), "fraud".into(), "conflicting".into(), 1)), "{:?}", snap.dropped);
    let diff = snap.counts.iter().find(|c| c.key.series == Series::ScoreDifference).unwrap();
    assert_eq!(diff.n, 4);
    assert!((diff.total - (-0.2 + 0.5 + 0.1 + 0.1)).abs() < 1e-9, "{}", diff.total);
}

/// Labels older than the horizon are not stored; a label that waited past `label_wait` is dropped
/// (counted); predictions and labels past the horizon are deleted; the counts stay.
async fn horizon_and_waiting_labels(store: &Store) {
    store.record_predictions(&batch("v1", Role::Stable, &[("old", true, 0.9)])).await.unwrap();
    let old = Label { request_id: "old".into(), label: true, time_ms: Some(NOW - 8 * DAY) };
    let a = store.record_labels("team-a", "fraud", &[old, label("early", true)], NOW, 7 * DAY).await.unwrap();
    assert_eq!((a.too_old, a.recorded), (1, 1));
    let p = store.prune(NOW + 2 * 3_600_000, 7 * DAY, 3_600_000).await.unwrap();
    assert_eq!(p.waiting_expired, 1, "{p:?}");
    let p = store.prune(NOW + 8 * DAY, 7 * DAY, 3_600_000).await.unwrap();
    assert_eq!(p.predictions, 1, "{p:?}");
    assert_eq!(store.rows().await.unwrap(), (0, 0));
    let c = counts(store).await;
    assert_eq!(n(&c, "v1", Series::Predictions, "", ""), 1, "counts outlive the rows");
    let snap = store.snapshot().await.unwrap();
    for reason in ["too_old", "expired_waiting"] {
        assert!(
            snap.dropped.contains(&("team-a".into(), "fraud".into(), reason.into(), 1)),
            "{reason}: {:?}",
            snap.dropped
        );
    }
}

/// A version's reference and its predictions' bins: counted once (a retried batch adds nothing),
/// the same reference again changes nothing, another digest replaces it and restarts the bins.
async fn input_drift_counts(store: &Store) {
    use modelrollout_contract::evidence::{BIN_MISSING, FeatureReference, Reference, ReferenceRecord};
    let record = |sha: char| ReferenceRecord {
        namespace: "team-a".into(),
        rollout: "fraud".into(),
        model: "fraud".into(),
        version: "v2".into(),
        sha256: sha.to_string().repeat(64),
        reference: Reference {
            features: vec![
                FeatureReference {
                    name: "amount".into(),
                    measure: Default::default(),
                    edges: vec![10.0],
                    proportions: vec![0.5, 0.5],
                },
                FeatureReference {
                    name: "hour".into(),
                    measure: Default::default(),
                    edges: vec![6.0, 12.0],
                    proportions: vec![0.25, 0.5, 0.25],
                },
            ],
        },
    };
    assert!(store.put_reference(&record('a')).await.unwrap());
    assert!(!store.put_reference(&record('a')).await.unwrap(), "the same digest again changes nothing");
    let mut b = batch("v2", Role::Shadow, &[("r1", true, 0.7), ("r2", true, 0.6), ("r3", false, 0.1)]);
    b.records[0].bins = vec![0, 2];
    b.records[1].bins = vec![1, 2];
    b.records[2].bins = vec![1, BIN_MISSING];
    store.record_predictions(&b).await.unwrap();
    store.record_predictions(&b).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.drift.len(), 1);
    assert_eq!((snap.drift[0].role, snap.drift[0].version.as_str()), (Role::Shadow, "v2"));
    assert_eq!(snap.drift[0].counts, vec![vec![1, 2], vec![0, 0, 2]], "once each; a missing value not at all");
    assert_eq!(snap.drift[0].reference, record('a').reference);
    assert!(store.put_reference(&record('b')).await.unwrap());
    assert!(store.snapshot().await.unwrap().drift.is_empty(), "a new reference restarts the bins");
}

#[tokio::test]
async fn sqlite_input_drift_counts() {
    let (store, _d) = sqlite().await;
    input_drift_counts(&store).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: bash tests/run.sh"]
async fn postgres_input_drift_counts() {
    let store = postgres("evidence_drift").await;
    input_drift_counts(&store).await;
}

#[tokio::test]
async fn sqlite_joins_once_whatever_the_order_and_the_retries() {
    let (store, _d) = sqlite().await;
    joins_once_whatever_the_order_and_the_retries(&store).await;
}

#[tokio::test]
async fn sqlite_horizon_and_waiting_labels() {
    let (store, _d) = sqlite().await;
    horizon_and_waiting_labels(&store).await;
}

/// The file is the store: reopened (a restarted pod on the same volume), every count is there.
#[tokio::test]
async fn sqlite_a_reopened_store_keeps_every_count() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/evidence.db", dir.0.display());
    let store = Store::open(&url).await.unwrap();
    joins_once_whatever_the_order_and_the_retries(&store).await;
    let before = store.snapshot().await.unwrap();
    drop(store);
    let reopened = Store::open(&url).await.unwrap();
    assert_eq!(reopened.snapshot().await.unwrap(), before);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: bash tests/run.sh"]
async fn postgres_joins_once_whatever_the_order_and_the_retries() {
    let store = postgres("evidence_join").await;
    joins_once_whatever_the_order_and_the_retries(&store).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: bash tests/run.sh"]
async fn postgres_horizon_and_waiting_labels() {
    let store = postgres("evidence_horizon").await;
    horizon_and_waiting_labels(&store).await;
}
