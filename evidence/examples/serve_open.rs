//! The evidence service's routes over a store with every caller allowed: for benchmarks on a
//! machine with no apiserver to review tokens (benches/evidence.sh puts sidecars in front of it).
//! Never a way to run the service: the binary always checks callers.
//!
//!   serve_open <listen-address> <database-url>

use std::sync::Arc;

use futures::future::BoxFuture;
use modelrollout_evidence::Error;
use modelrollout_evidence::api::{AppState, router};
use modelrollout_evidence::auth::{Access, Authorizer};
use modelrollout_evidence::store::Store;

struct Everyone;

impl Authorizer for Everyone {
    fn review(&self, _: String, _: String, _: &'static str) -> BoxFuture<'static, Result<Access, Error>> {
        Box::pin(async { Ok(Access::Allowed { user: "bench".into() }) })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let store = Arc::new(Store::open(&args[2]).await?);
    let state = Arc::new(AppState::new(store, Box::new(Everyone), 7 * 86_400_000));
    let listener = tokio::net::TcpListener::bind(&args[1]).await?;
    axum::serve(listener, router(state, 64 << 20)).await?;
    Ok(())
}
