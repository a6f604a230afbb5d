//! `s3://` models against a real S3-compatible server: versitygw (tests/s3/build.sh builds it from
//! its Go module; `MODELROLLOUT_VERSITYGW` names the binary) serving a directory, the sidecar binary
//! as a process with the usual AWS environment. A good download, a wrong sha256, a missing object,
//! bad credentials, a download cut short that resumes, and one much bigger than the memory the
//! process ever holds (`--fetch-only`, streamed to disk).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const KEY: &str = "AKMODELROLLOUT";
const SECRET: &str = "modelrollout-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory of its own under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sidecar-s3-{what}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// versitygw serving `root` (its sub-directories are buckets) on 127.0.0.1.
struct Gateway {
    child: Child,
    endpoint: String,
    _root: Dir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway() -> Gateway {
    let bin =
        std::env::var("MODELROLLOUT_VERSITYGW").expect("MODELROLLOUT_VERSITYGW (bash tests/s3/build.sh prints it)");
    let root = Dir::new("root");
    std::fs::create_dir_all(root.0.join("models")).unwrap();
    std::fs::copy(models().join("fraud-v2.onnx"), root.0.join("models/fraud-v2.onnx")).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--access", KEY, "--secret", SECRET, "--port", &format!("127.0.0.1:{port}"), "posix"])
        .arg(&root.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("versitygw runs");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "versitygw did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Gateway { child, endpoint: format!("http://127.0.0.1:{port}"), _root: root }
}

/// The sidecar on `uri` with the AWS environment pointing at `endpoint`.
fn sidecar(uri: &str, sha: &str, endpoint: &str, secret: &str, cache: &Path, port: u16) -> Child {
    require_ort();
    let contract = contract_file(FRAUD_CONTRACT);
    let child = Command::new(env!("CARGO_BIN_EXE_inference-sidecar"))
        .args(["--model-name", "fraud", "--model-version", "v2", "--model-uri", uri, "--model-sha256", sha])
        .arg("--contract")
        .arg(&contract.0)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log-format", "text"])
        .arg("--cache-dir")
        .arg(cache)
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sidecar binary runs");
    // The contract file must outlive the start; the sidecar has read it once it listens.
    std::thread::sleep(Duration::from_millis(300));
    drop(contract);
    child
}

fn ready(port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map_or_else(|_| Vec::new(), |d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
}

#[test]
#[ignore = "needs ONNX Runtime and versitygw: bash tests/run.sh"]
fn s3_models_download_verified_every_failure_named_and_a_cut_download_resumed() {
    let gw = gateway();
    let good = sha("fraud-v2.onnx");
    // A good download: served, and kept in the cache under its digest.
    let cache = Dir::new("cache");
    let port = free_port();
    let mut child = sidecar("s3://models/fraud-v2.onnx", &good, &gw.endpoint, SECRET, &cache.0, port);
    assert!(ready(port), "not ready from s3");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(files_in(&cache.0), [format!("{good}.model")]);

    // A wrong sha256, a missing object, bad credentials: each exits 1 naming why, nothing kept.
    let cases = [
        ("wrong sha256", "s3://models/fraud-v2.onnx", "a".repeat(64), SECRET, "sha256 mismatch"),
        (
            "missing object",
            "s3://models/fraud-v9.onnx",
            good.clone(),
            SECRET,
            "no object fraud-v9.onnx in bucket models",
        ),
        ("bad credentials", "s3://models/fraud-v2.onnx", good.clone(), "not-the-secret", "403 Forbidden"),
    ];
    for (case, uri, digest, secret, says) in cases {
        let cache = Dir::new("cache");
        let (code, err) =
            wait_exit(&mut sidecar(uri, &digest, &gw.endpoint, secret, &cache.0, free_port()), Duration::from_secs(30));
        assert_eq!(code, 1, "{case}: {err}");
        assert!(err.contains(says), "{case}: `{says}` not in {err}");
        assert!(files_in(&cache.0).is_empty(), "{case}: left {:?}", files_in(&cache.0));
    }
    an_s3_download_cut_short_resumes_and_is_verified(&gw);
    a_download_many_times_the_memory_held_streams_to_disk(&gw);
}

/// A proxy to `upstream` that cuts its first connection after `cut` bytes of the answer.
fn cutting_proxy(upstream: String, cut: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let Ok(mut server) = TcpStream::connect(upstream.trim_start_matches("http://")) else { continue };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            std::thread::spawn(move || {
                let limit = if n == 0 { cut } else { usize::MAX };
                let mut buf = [0u8; 4096];
                let mut sent = 0;
                while let Ok(k) = server.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let k = k.min(limit - sent);
                    if client.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    sent += k;
                    if sent >= limit {
                        // Cut: the answer ends mid-body.
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), connections)
}

/// (One test with the one above: ports picked by bind-and-close must not race another test's.)
fn an_s3_download_cut_short_resumes_and_is_verified(gw: &Gateway) {
    // The model is 33 KB: the first answer stops after 12 KB of it (headers included).
    let (endpoint, connections) = cutting_proxy(gw.endpoint.clone(), 12_000);
    let cache = Dir::new("cache");
    let port = free_port();
    let mut child = sidecar("s3://models/fraud-v2.onnx", &sha("fraud-v2.onnx"), &endpoint, SECRET, &cache.0, port);
    let ok = ready(port);
    let _ = child.kill();
    let (_, err) = wait_exit(&mut child, Duration::from_secs(30));
    assert!(ok, "not ready after a cut download: {err}");
    assert!(connections.load(Ordering::SeqCst) >= 2, "the download was not tried again");
    assert_eq!(files_in(&cache.0), [format!("{}.model", sha("fraud-v2.onnx"))]);
}

/// The object's size, and the most the fetching process may hold: a quarter of it.
const BIG: usize = 384 << 20;
const BIG_RSS_LIMIT_KIB: i64 = (BIG as i64 / 4) >> 10;

/// `--fetch-only` on an object of `BIG` bytes: the path printed is the verified cached file, and the
/// process's peak resident memory (the kernel's own count, from wait4) stays under a quarter of it,
/// downloading and again when it finds the copy in the cache and checks its digest.
fn a_download_many_times_the_memory_held_streams_to_disk(gw: &Gateway) {
    use sha2::{Digest, Sha256};
    let path = gw._root.0.join("models/big.bin");
    let mut hasher = Sha256::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for i in 0..(BIG >> 20) {
            // Every block differs, so no layer could fold the object into a few pages.
            for (j, b) in block.iter_mut().enumerate() {
                *b = (i.wrapping_mul(131) ^ j.wrapping_mul(7) ^ (j >> 8)) as u8;
            }
            hasher.update(&block);
            f.write_all(&block).unwrap();
        }
    }
    let digest = hex::encode(hasher.finalize());
    let cache = Dir::new("cache");
    let want = cache.0.join(format!("{digest}.model"));
    for run in ["download", "cached"] {
        let child = Command::new(env!("CARGO_BIN_EXE_inference-sidecar"))
            .args(["--fetch-only", "--model-uri", "s3://models/big.bin", "--model-sha256", &digest])
            .args(["--log-format", "text"])
            .arg("--cache-dir")
            .arg(&cache.0)
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_ENDPOINT", &gw.endpoint)
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sidecar binary runs");
        let (code, peak_kib, out, err) = wait_with_peak_rss(child);
        assert_eq!(code, 0, "{run}: {err}");
        assert_eq!(out.trim(), want.display().to_string(), "{run}: prints the cached file");
        assert_eq!(std::fs::metadata(&want).unwrap().len(), BIG as u64, "{run}");
        assert!(
            peak_kib < BIG_RSS_LIMIT_KIB,
            "{run}: peak RSS {peak_kib} KiB for a {} MiB object (limit {BIG_RSS_LIMIT_KIB} KiB)",
            BIG >> 20
        );
        println!("BIG FETCH {run}: {} MiB object, peak RSS {} MiB", BIG >> 20, peak_kib >> 10);
    }
    assert_eq!(files_in(&cache.0), [format!("{digest}.model")]);
    let _ = std::fs::remove_file(&path);
}

/// Waits for `child` with wait4: its exit code, its peak resident set in KiB, stdout and stderr.
fn wait_with_peak_rss(mut child: Child) -> (i32, i64, String, String) {
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, usage.ru_maxrss, readers.0.join().unwrap(), readers.1.join().unwrap())
}
