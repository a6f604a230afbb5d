//! The controller's client queues requests beyond its in-flight cap instead of sending them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use modelrollout::cli::client;

/// Sends 12 requests at once to a server that holds each 50 ms; returns the most it saw at once.
async fn most_in_flight(cap: Option<usize>) -> usize {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let app = axum::Router::new().fallback(move || {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let inside = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(inside, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = client(kube::Config::new(url.parse().unwrap()), cap).unwrap();
    let requests = (0..12).map(|_| {
        let c = c.clone();
        async move { c.request_text(http::Request::get("/version").body(Vec::new()).unwrap()).await.unwrap() }
    });
    futures::future::join_all(requests).await;
    most.load(Ordering::SeqCst)
}

#[tokio::test]
async fn requests_beyond_the_cap_wait_for_one_to_finish() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert_eq!(most_in_flight(Some(3)).await, 3);
    assert!(most_in_flight(None).await > 3, "uncapped, they all go out together");
}
