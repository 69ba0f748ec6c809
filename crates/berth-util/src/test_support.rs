//! Waits used by this crate's own tests (the shared ones live in berth-testkit, which
//! depends on this crate and so cannot be used here).

use std::net::SocketAddr;
use std::time::Duration;

async fn poll(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_until_refused(addr: SocketAddr) {
    poll("the listener to close", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}
