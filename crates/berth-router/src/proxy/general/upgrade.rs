//! Protocol upgrades (WebSocket): once both sides switched protocols, bytes are copied
//! both ways until either side closes. The in-flight slot is held for the tunnel's life so
//! least-connections and the connection limit see long-lived sockets.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::endpoint::InFlight;

pub fn tunnel(client: OnUpgrade, backend: OnUpgrade, slot: InFlight, _idle: Duration) {
    tokio::spawn(async move {
        let _slot = slot;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "protocol upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
        }
    });
}
