//! The evidence store: SQLite (a file on the service's volume) by default, PostgreSQL when the URL
//! says so, through one code path (sqlx's Any driver) and one schema (`migrations/`, versioned and
//! applied at start). Every write is one transaction that stores the new rows and changes the
//! counts they add to ([`crate::tally`]): what is committed is counted once, and a batch is stored
//! whole or not at all.

use std::collections::HashMap;

use modelrollout_contract::Role;
use modelrollout_contract::evidence::{
    BIN_MISSING, Label, LabelAnswer, PredictionAnswer, PredictionBatch, Reference, ReferenceRecord,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::Error;
use crate::tally::{self, Delta, Key, Prediction, Series, StoredLabel};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The longest conflicting request ids one label answer lists.
const CONFLICTS_LISTED: usize = 100;

/// Which database is underneath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Writes are serialised: a pair's two predictions and its label may arrive in three
    /// concurrent batches, and each must see the others' committed rows to count the pair once.
    writer: tokio::sync::Mutex<()>,
}

/// One exported count, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Count {
    pub namespace: String,
    pub rollout: String,
    pub key: Key,
    pub n: i64,
    pub total: f64,
}

/// Everything `/metrics` exports, read in one go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub counts: Vec<Count>,
    /// (namespace, rollout, reason, n)
    pub dropped: Vec<(String, String, String, i64)>,
    /// (namespace, rollout, labels waiting for their prediction)
    pub waiting: Vec<(String, String, i64)>,
    /// Each version's reference and its predictions' counts per feature and bin.
    pub drift: Vec<DriftCounts>,
}

/// A version's predictions in the bins of its reference (one role's).
#[derive(Clone, Debug, PartialEq)]
pub struct DriftCounts {
    pub namespace: String,
    pub rollout: String,
    pub model: String,
    pub version: String,
    pub role: Role,
    pub reference: Reference,
    /// Per feature of the reference, the count in each of its bins.
    pub counts: Vec<Vec<i64>>,
}

/// Where a reference is stored.
type VersionKey = (String, String, String, String);

/// What a prune removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub predictions: u64,
    pub labels: u64,
    pub waiting_expired: u64,
}

fn db(e: sqlx::Error) -> Error {
    Error::Store(e.to_string())
}

impl Store {
    /// Opens (creating a SQLite file if need be) and migrates the store at `url`:
    /// `sqlite:///var/lib/evidence/evidence.db` or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::Config(format!("database URL {url:?}: sqlite:... or postgres://...")));
        };
        let url = match backend {
            // Created when missing.
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Readers beside the one writer; a commit survives a crash of the process
                        // (WAL with synchronous NORMAL: durable across process crashes, not power loss).
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db)?;
        MIGRATOR.run(&pool).await.map_err(|e| Error::Store(format!("migrations: {e}")))?;
        Ok(Self { pool, backend, writer: tokio::sync::Mutex::new(()) })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores a sidecar's batch: each new prediction is joined to its label (if one waits) and to
    /// the other versions' predictions of its request id. A prediction already stored (a retried
    /// batch) is counted as a duplicate and adds nothing.
    pub async fn record_predictions(&self, batch: &PredictionBatch) -> Result<PredictionAnswer, Error> {
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut answer = PredictionAnswer::default();
        let mut deltas = Vec::new();
        let (ns, rollout) = (batch.namespace.as_str(), batch.rollout.as_str());
        // (feature, bin) -> predictions, for the records stored now.
        let mut bins: HashMap<(usize, u16), i64> = HashMap::new();
        for r in &batch.records {
            let inserted = sqlx::query(
                "INSERT INTO predictions (namespace, rollout, request_id, version, model, role, time_ms, decision, score) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .bind(ns)
            .bind(rollout)
            .bind(&r.request_id)
            .bind(&batch.version)
            .bind(&batch.model)
            .bind(batch.role.as_str())
            .bind(r.time_ms)
            .bind(i64::from(r.decision))
            .bind(r.score)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if inserted == 0 {
                answer.duplicates += 1;
                continue;
            }
            answer.recorded += 1;
            for (feature, &bin) in r.bins.iter().enumerate().filter(|(_, b)| **b != BIN_MISSING) {
                *bins.entry((feature, bin)).or_default() += 1;
            }
            let label = sqlx::query(
                "SELECT label, time_ms, joined FROM labels WHERE namespace = $1 AND rollout = $2 AND request_id = $3",
            )
            .bind(ns)
            .bind(rollout)
            .bind(&r.request_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let label = match label {
                Some(row) => {
                    let l = StoredLabel { label: flag(&row, 0)?, time_ms: row.try_get(1).map_err(db)? };
                    if !flag(&row, 2)? {
                        sqlx::query(
                            "UPDATE labels SET joined = $4 WHERE namespace = $1 AND rollout = $2 AND request_id = $3",
                        )
                        .bind(ns)
                        .bind(rollout)
                        .bind(&r.request_id)
                        .bind(1_i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    }
                    answer.joined += 1;
                    Some(l)
                }
                None => None,
            };
            let others = predictions_of(&mut tx, ns, rollout, &r.request_id, Some(&batch.version)).await?;
            let new = Prediction {
                model: batch.model.clone(),
                version: batch.version.clone(),
                role: batch.role,
                time_ms: r.time_ms,
                decision: r.decision,
                score: r.score,
            };
            deltas.extend(tally::on_prediction(&new, &others, label));
        }
        apply(&mut tx, ns, rollout, deltas).await?;
        for ((feature, bin), n) in bins {
            sqlx::query(
                "INSERT INTO feature_bins (namespace, rollout, model, version, role, feature, bin, n) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (namespace, rollout, model, version, role, feature, bin) \
                 DO UPDATE SET n = feature_bins.n + excluded.n",
            )
            .bind(ns)
            .bind(rollout)
            .bind(&batch.model)
            .bind(&batch.version)
            .bind(batch.role.as_str())
            .bind(feature as i64)
            .bind(i64::from(bin))
            .bind(n)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(answer)
    }

    /// Stores a version's reference. The same digest again changes nothing; a different one
    /// replaces the reference and deletes the version's bin counts (they were of the old bins).
    /// Answers whether anything changed.
    pub async fn put_reference(&self, r: &ReferenceRecord) -> Result<bool, Error> {
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let stored = sqlx::query(
            "SELECT sha256 FROM model_references WHERE namespace = $1 AND rollout = $2 AND model = $3 AND version = $4",
        )
        .bind(&r.namespace)
        .bind(&r.rollout)
        .bind(&r.model)
        .bind(&r.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let stored: Option<String> = stored.map(|row| row.try_get(0)).transpose().map_err(db)?;
        if stored.as_deref() == Some(r.sha256.as_str()) {
            return Ok(false);
        }
        let features = serde_json::to_string(&r.reference).map_err(|e| Error::Store(e.to_string()))?;
        for q in [
            "DELETE FROM model_references WHERE namespace = $1 AND rollout = $2 AND model = $3 AND version = $4",
            "DELETE FROM feature_bins WHERE namespace = $1 AND rollout = $2 AND model = $3 AND version = $4",
        ] {
            sqlx::query(q)
                .bind(&r.namespace)
                .bind(&r.rollout)
                .bind(&r.model)
                .bind(&r.version)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        sqlx::query(
            "INSERT INTO model_references (namespace, rollout, model, version, sha256, features) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.namespace)
        .bind(&r.rollout)
        .bind(&r.model)
        .bind(&r.version)
        .bind(&r.sha256)
        .bind(features)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Stores labels for one rollout. The first label of a request id stands: the same label again
    /// is a duplicate, a different one is refused as conflicting (counted, listed, not stored).
    /// A label older than the horizon is not stored.
    pub async fn record_labels(
        &self,
        ns: &str,
        rollout: &str,
        labels: &[Label],
        now_ms: i64,
        horizon_ms: i64,
    ) -> Result<LabelAnswer, Error> {
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut answer = LabelAnswer::default();
        let mut deltas = Vec::new();
        let mut dropped: HashMap<&'static str, i64> = HashMap::new();
        for l in labels {
            let time_ms = l.time_ms.unwrap_or(now_ms);
            if time_ms < now_ms - horizon_ms {
                answer.too_old += 1;
                *dropped.entry("too_old").or_default() += 1;
                continue;
            }
            let stored =
                sqlx::query("SELECT label FROM labels WHERE namespace = $1 AND rollout = $2 AND request_id = $3")
                    .bind(ns)
                    .bind(rollout)
                    .bind(&l.request_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if let Some(row) = stored {
                let first = flag(&row, 0)?;
                if first == l.label {
                    answer.duplicates += 1;
                } else {
                    answer.conflicting += 1;
                    *dropped.entry("conflicting").or_default() += 1;
                    if answer.conflicts.len() < CONFLICTS_LISTED {
                        answer.conflicts.push(l.request_id.clone());
                    }
                }
                continue;
            }
            let predictions = predictions_of(&mut tx, ns, rollout, &l.request_id, None).await?;
            sqlx::query(
                "INSERT INTO labels (namespace, rollout, request_id, label, time_ms, received_ms, joined) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(ns)
            .bind(rollout)
            .bind(&l.request_id)
            .bind(i64::from(l.label))
            .bind(time_ms)
            .bind(now_ms)
            .bind(i64::from(!predictions.is_empty()))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            answer.recorded += 1;
            if !predictions.is_empty() {
                answer.joined += 1;
            }
            deltas.extend(tally::on_label(StoredLabel { label: l.label, time_ms }, &predictions));
        }
        apply(&mut tx, ns, rollout, deltas).await?;
        for (reason, n) in dropped {
            count_dropped(&mut tx, ns, rollout, reason, n).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(answer)
    }

    /// Deletes predictions and labels older than the horizon, and labels that waited longer than
    /// `label_wait_ms` for a prediction (counted as dropped, `expired_waiting`). The counts stay.
    pub async fn prune(&self, now_ms: i64, horizon_ms: i64, label_wait_ms: i64) -> Result<Pruned, Error> {
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let expired = sqlx::query(
            "SELECT namespace, rollout, COUNT(*) FROM labels WHERE joined = $1 AND received_ms < $2 GROUP BY namespace, rollout",
        )
        .bind(0_i64)
        .bind(now_ms - label_wait_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut pruned = Pruned::default();
        for row in expired {
            let (ns, rollout, n): (String, String, i64) =
                (row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?, row.try_get(2).map_err(db)?);
            count_dropped(&mut tx, &ns, &rollout, "expired_waiting", n).await?;
            pruned.waiting_expired += n as u64;
        }
        sqlx::query("DELETE FROM labels WHERE joined = $1 AND received_ms < $2")
            .bind(0_i64)
            .bind(now_ms - label_wait_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        pruned.labels = sqlx::query("DELETE FROM labels WHERE received_ms < $1")
            .bind(now_ms - horizon_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        pruned.predictions = sqlx::query("DELETE FROM predictions WHERE time_ms < $1")
            .bind(now_ms - horizon_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(pruned)
    }

    /// Every count, dropped label and waiting label, for `/metrics`.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let rows = sqlx::query(
            "SELECT namespace, rollout, model, version, role, series, detail, peer, n, total FROM counts \
             ORDER BY namespace, rollout, model, version, role, series, detail, peer",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut snap = Snapshot::default();
        for row in rows {
            if let Some(c) = count_of(&row)? {
                snap.counts.push(c);
            }
        }
        for row in sqlx::query("SELECT namespace, rollout, reason, n FROM dropped ORDER BY namespace, rollout, reason")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
        {
            snap.dropped.push((
                row.try_get(0).map_err(db)?,
                row.try_get(1).map_err(db)?,
                row.try_get(2).map_err(db)?,
                row.try_get(3).map_err(db)?,
            ));
        }
        for row in sqlx::query(
            "SELECT namespace, rollout, COUNT(*) FROM labels WHERE joined = $1 GROUP BY namespace, rollout ORDER BY namespace, rollout",
        )
        .bind(0_i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        {
            snap.waiting.push((row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?, row.try_get(2).map_err(db)?));
        }
        snap.drift = self.drift_counts().await?;
        Ok(snap)
    }

    /// Every version's reference with its bin counts (bins a reference does not have, from
    /// records sent before it changed, are left out).
    async fn drift_counts(&self) -> Result<Vec<DriftCounts>, Error> {
        let mut references: HashMap<VersionKey, Reference> = HashMap::new();
        for row in sqlx::query("SELECT namespace, rollout, model, version, features FROM model_references")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
        {
            let features: String = row.try_get(4).map_err(db)?;
            let Ok(reference) = serde_json::from_str::<Reference>(&features) else { continue };
            let key = (
                row.try_get(0).map_err(db)?,
                row.try_get(1).map_err(db)?,
                row.try_get(2).map_err(db)?,
                row.try_get(3).map_err(db)?,
            );
            references.insert(key, reference);
        }
        // (version, role) -> its reference and its counts per feature and bin.
        type Binned<'r> = (&'r Reference, Vec<Vec<i64>>);
        let mut out: std::collections::BTreeMap<(VersionKey, String), Binned> = Default::default();
        for row in sqlx::query(
            "SELECT namespace, rollout, model, version, role, feature, bin, n FROM feature_bins \
             ORDER BY namespace, rollout, model, version, role",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        {
            let key: VersionKey = (
                row.try_get(0).map_err(db)?,
                row.try_get(1).map_err(db)?,
                row.try_get(2).map_err(db)?,
                row.try_get(3).map_err(db)?,
            );
            let Some(reference) = references.get(&key) else { continue };
            let role: String = row.try_get(4).map_err(db)?;
            let (feature, bin, n): (i64, i64, i64) =
                (row.try_get(5).map_err(db)?, row.try_get(6).map_err(db)?, row.try_get(7).map_err(db)?);
            let (_, counts) = out.entry((key, role)).or_insert_with(|| {
                (reference, reference.features.iter().map(|f| vec![0; f.proportions.len()]).collect())
            });
            if let Some(c) = counts.get_mut(feature as usize).and_then(|f| f.get_mut(bin as usize)) {
                *c += n;
            }
        }
        Ok(out
            .into_iter()
            .filter_map(|(((namespace, rollout, model, version), role), (reference, counts))| {
                Some(DriftCounts {
                    role: Role::parse(&role)?,
                    reference: reference.clone(),
                    namespace,
                    rollout,
                    model,
                    version,
                    counts,
                })
            })
            .collect())
    }

    /// Rows stored: (predictions, labels).
    pub async fn rows(&self) -> Result<(i64, i64), Error> {
        let p: i64 = sqlx::query("SELECT COUNT(*) FROM predictions")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        let l: i64 = sqlx::query("SELECT COUNT(*) FROM labels")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok((p, l))
    }

    /// The bytes the database takes: SQLite's pages (after a WAL checkpoint), PostgreSQL's
    /// `pg_database_size`.
    pub async fn size_bytes(&self) -> Result<i64, Error> {
        let one = |q: &'static str| async move {
            sqlx::query(q).fetch_one(&self.pool).await.map_err(db)?.try_get::<i64, _>(0).map_err(db)
        };
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await.map_err(db)?;
                Ok(one("PRAGMA page_count").await? * one("PRAGMA page_size").await?)
            }
            Backend::Postgres => one("SELECT pg_database_size(current_database())").await,
        }
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }
}

/// A 0/1 column as a bool.
fn flag(row: &AnyRow, i: usize) -> Result<bool, Error> {
    Ok(row.try_get::<i64, _>(i).map_err(db)? != 0)
}

/// The predictions of a request id, other than `except`'s version.
async fn predictions_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ns: &str,
    rollout: &str,
    request_id: &str,
    except: Option<&str>,
) -> Result<Vec<Prediction>, Error> {
    let rows = sqlx::query(
        "SELECT model, version, role, time_ms, decision, score FROM predictions \
         WHERE namespace = $1 AND rollout = $2 AND request_id = $3 AND version <> $4 ORDER BY version",
    )
    .bind(ns)
    .bind(rollout)
    .bind(request_id)
    .bind(except.unwrap_or(""))
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let role: String = row.try_get(2).map_err(db)?;
            Ok(Prediction {
                model: row.try_get(0).map_err(db)?,
                version: row.try_get(1).map_err(db)?,
                role: Role::parse(&role).ok_or_else(|| Error::Store(format!("a stored role {role:?}")))?,
                time_ms: row.try_get(3).map_err(db)?,
                decision: flag(row, 4)?,
                score: row.try_get(5).map_err(db)?,
            })
        })
        .collect()
}

/// Adds the deltas to the counts, one upsert per distinct count.
async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ns: &str,
    rollout: &str,
    deltas: Vec<Delta>,
) -> Result<(), Error> {
    let mut summed: HashMap<Key, (i64, f64)> = HashMap::new();
    for d in deltas {
        let e = summed.entry(d.key).or_default();
        e.0 += d.n;
        e.1 += d.total;
    }
    for (k, (n, total)) in summed {
        sqlx::query(
            "INSERT INTO counts (namespace, rollout, model, version, role, series, detail, peer, n, total) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (namespace, rollout, model, version, role, series, detail, peer) \
             DO UPDATE SET n = counts.n + excluded.n, total = counts.total + excluded.total",
        )
        .bind(ns)
        .bind(rollout)
        .bind(&k.model)
        .bind(&k.version)
        .bind(k.role.as_str())
        .bind(k.series.as_str())
        .bind(k.detail)
        .bind(&k.peer)
        .bind(n)
        .bind(total)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn count_dropped(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ns: &str,
    rollout: &str,
    reason: &str,
    n: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO dropped (namespace, rollout, reason, n) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (namespace, rollout, reason) DO UPDATE SET n = dropped.n + excluded.n",
    )
    .bind(ns)
    .bind(rollout)
    .bind(reason)
    .bind(n)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// A stored count; `None` for a series or detail this build does not know (a newer schema's).
fn count_of(row: &AnyRow) -> Result<Option<Count>, Error> {
    let series: String = row.try_get(5).map_err(db)?;
    let detail: String = row.try_get(6).map_err(db)?;
    let role: String = row.try_get(4).map_err(db)?;
    let (Some(series), Some(detail), Some(role)) =
        (Series::parse(&series), crate::export::known_detail(&detail), Role::parse(&role))
    else {
        return Ok(None);
    };
    Ok(Some(Count {
        namespace: row.try_get(0).map_err(db)?,
        rollout: row.try_get(1).map_err(db)?,
        key: Key {
            model: row.try_get(2).map_err(db)?,
            version: row.try_get(3).map_err(db)?,
            role,
            series,
            detail,
            peer: row.try_get(7).map_err(db)?,
        },
        n: row.try_get(8).map_err(db)?,
        total: row.try_get(9).map_err(db)?,
    }))
}
