//! The agent's background tasks: all stop when the agent shuts down, and the process's
//! shutdown waits for them (bridged in `start`).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            tracker: TaskTracker::new(),
        }
    }

    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task)
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the agent shuts down and every task has finished.
    pub async fn finished(&self) {
        self.token.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}
