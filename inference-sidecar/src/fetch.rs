//! Getting the model file: a local path, an http(s) URL or an `s3://bucket/key` object (the
//! `object_store` crate, with the usual credential chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//! web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), `AWS_ENDPOINT` for an
//! S3-compatible server). Downloads stream to a file under the cache directory while their
//! sha256 is computed: the download is never held whole in memory, and a file whose digest
//! differs is never kept. A download cut short resumes from where it stopped (3 attempts).

use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{GetOptions, GetRange, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::StartError;

/// Attempts per download (the first and the resumes after a cut).
const ATTEMPTS: u32 = 3;

pub fn is_remote(uri: &str) -> bool {
    uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("s3://")
}

fn local_path(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri))
}

/// Where a remote model with this digest is kept once verified.
fn cached(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join(format!("{sha256}.model"))
}

/// The verified model's bytes (ONNX Runtime loads them from memory): `uri` itself when local,
/// else a download into `cache_dir` named by its digest (reused when already there and intact).
/// Each file is read once.
pub async fn fetch_verified(uri: &str, sha256: &str, cache_dir: &Path) -> Result<Vec<u8>, StartError> {
    if !is_remote(uri) {
        return read_verified(&local_path(uri), sha256, uri).await;
    }
    let done = cached(cache_dir, sha256);
    if tokio::fs::try_exists(&done).await.unwrap_or(false)
        && let Ok(bytes) = read_verified(&done, sha256, uri).await
    {
        return Ok(bytes);
    }
    download(uri, sha256, cache_dir).await?;
    // Hashed as it streamed in: read, not hashed again.
    tokio::fs::read(&done)
        .await
        .map_err(|e| StartError::Read { path: done.display().to_string(), reason: e.to_string() })
}

/// The verified model on disk, never held whole in memory (`--fetch-only`, an init container's
/// job: the server then finds it in the cache): `uri` itself when local, else the cached copy,
/// downloaded unless already there and intact.
pub async fn fetch_to_cache(uri: &str, sha256: &str, cache_dir: &Path) -> Result<PathBuf, StartError> {
    if !is_remote(uri) {
        let path = local_path(uri);
        hash_verified(&path, sha256, uri).await?;
        return Ok(path);
    }
    let done = cached(cache_dir, sha256);
    if tokio::fs::try_exists(&done).await.unwrap_or(false) && hash_verified(&done, sha256, uri).await.is_ok() {
        return Ok(done);
    }
    download(uri, sha256, cache_dir).await?;
    Ok(done)
}

/// Streams `uri` into `cache_dir` while hashing it; renames it into place only when its digest is
/// `sha256`, resuming a cut download (`ATTEMPTS` in all).
async fn download(uri: &str, sha256: &str, cache_dir: &Path) -> Result<(), StartError> {
    let err = |reason: String| StartError::Download { uri: uri.to_string(), reason };
    tokio::fs::create_dir_all(cache_dir).await.map_err(|e| err(format!("{}: {e}", cache_dir.display())))?;
    let done = cached(cache_dir, sha256);
    let part = cache_dir.join(format!("{sha256}.part"));
    let mut file = tokio::fs::File::create(&part).await.map_err(|e| err(format!("{}: {e}", part.display())))?;
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let r = if uri.starts_with("s3://") {
            s3_from(uri, written, &mut file, &mut hasher).await
        } else {
            http_from(uri, written, &mut file, &mut hasher).await
        };
        match r {
            Ok(n) => {
                written += n;
                last.clear();
                break;
            }
            Err(Fetch::Fatal(reason)) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(err(reason));
            }
            Err(Fetch::Cut { got, reason }) => {
                written += got;
                tracing::warn!(uri, attempt, bytes_so_far = written, %reason, "download cut short; resuming");
                last = reason;
            }
        }
    }
    if !last.is_empty() {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(err(format!("cut short {ATTEMPTS} times: {last}")));
    }
    file.flush().await.map_err(|e| err(e.to_string()))?;
    drop(file);
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(StartError::DigestMismatch { uri: uri.into(), expected: sha256.into(), actual });
    }
    tokio::fs::rename(&part, &done).await.map_err(|e| err(e.to_string()))?;
    tracing::info!(uri, bytes = written, "model downloaded and verified");
    Ok(())
}

/// How a download attempt ended badly: for good (refused, missing) or cut after `got` bytes.
enum Fetch {
    Fatal(String),
    Cut { got: u64, reason: String },
}

async fn write(file: &mut tokio::fs::File, hasher: &mut Sha256, chunk: &[u8]) -> Result<(), Fetch> {
    hasher.update(chunk);
    file.write_all(chunk).await.map_err(|e| Fetch::Fatal(format!("writing the download: {e}")))
}

/// `s3://bucket/key` from byte `from` on.
async fn s3_from(uri: &str, from: u64, file: &mut tokio::fs::File, hasher: &mut Sha256) -> Result<u64, Fetch> {
    let rest = uri.strip_prefix("s3://").unwrap_or(uri);
    let (bucket, key) = rest.split_once('/').ok_or_else(|| Fetch::Fatal("expected s3://bucket/key".into()))?;
    let allow_http = std::env::var("AWS_ENDPOINT")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .is_ok_and(|e| e.starts_with("http://"));
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(allow_http)
        .build()
        .map_err(|e| Fetch::Fatal(e.to_string()))?;
    let options = GetOptions { range: (from > 0).then_some(GetRange::Offset(from)), ..Default::default() };
    let got = store.get_opts(&object_store::path::Path::from(key), options).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => Fatal(format!("no object {key} in bucket {bucket}")),
        other => Fatal(other.to_string()),
    })?;
    let mut stream = got.into_stream();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Fetch::Cut { got: n, reason: e.to_string() })?;
        write(file, hasher, &chunk).await?;
        n += chunk.len() as u64;
    }
    Ok(n)
}

use Fetch::Fatal;

/// An http(s) URL from byte `from` on (a `Range` request when resuming).
async fn http_from(uri: &str, from: u64, file: &mut tokio::fs::File, hasher: &mut Sha256) -> Result<u64, Fetch> {
    let mut req = reqwest::Client::new().get(uri);
    if from > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
    }
    let mut resp = req.send().await.map_err(|e| Fetch::Cut { got: 0, reason: e.to_string() })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Fatal(format!("HTTP {status}")));
    }
    if from > 0 && status != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(Fatal("the server does not resume downloads (no 206 to a Range request)".into()));
    }
    let mut n = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                write(file, hasher, &chunk).await?;
                n += chunk.len() as u64;
            }
            Ok(None) => return Ok(n),
            Err(e) => return Err(Fetch::Cut { got: n, reason: e.to_string() }),
        }
    }
}

/// The lower-case hex SHA-256 of some bytes.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file's bytes, if their sha256 is the one expected.
async fn read_verified(path: &Path, sha256: &str, uri: &str) -> Result<Vec<u8>, StartError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| StartError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    let actual = hex_sha256(&bytes);
    if actual != sha256 {
        return Err(StartError::DigestMismatch { uri: uri.into(), expected: sha256.into(), actual });
    }
    Ok(bytes)
}

/// Checks a file's sha256 reading it in chunks (never whole).
async fn hash_verified(path: &Path, sha256: &str, uri: &str) -> Result<(), StartError> {
    use tokio::io::AsyncReadExt;
    let read_err = |e: std::io::Error| StartError::Read { path: path.display().to_string(), reason: e.to_string() };
    let mut file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        return Err(StartError::DigestMismatch { uri: uri.into(), expected: sha256.into(), actual });
    }
    Ok(())
}
