//! Graceful shutdown shared by every task of a process.
//!
//! One [`Shutdown`] per process (or per role in `berth dev`, where all roles share it):
//! signals trigger it, listeners stop accepting when it fires, and `drain` waits for the
//! tracked tasks to finish in-flight work, bounded so a stuck connection cannot keep the
//! process alive forever.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// Returned when tasks were still running when the drain deadline passed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{still_running} task(s) still running after the {timeout:?} shutdown grace period; they were abandoned"
)]
pub struct DrainTimeout {
    pub still_running: usize,
    pub timeout: Duration,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Triggers this shutdown on the first SIGTERM or SIGINT.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = self.token.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = token.cancelled() => return,
            };
            tracing::info!(
                signal = name,
                "shutting down: stop accepting, finish in-flight work"
            );
            token.cancel();
        });
        Ok(())
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown was triggered. Owned, so it can move into spawned tasks.
    pub fn cancelled(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task that `drain` waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Number of tracked tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits for every tracked task, at most `timeout`.
    pub async fn drain(&self, timeout: Duration) -> Result<(), DrainTimeout> {
        self.tracker.close();
        match tokio::time::timeout(timeout, self.tracker.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(DrainTimeout {
                still_running: self.tracker.len(),
                timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_finish_their_work() {
        let shutdown = Shutdown::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let cancelled = shutdown.cancelled();
        shutdown.spawn(async move {
            cancelled.await;
            // In-flight work that must complete after the trigger.
            tokio::task::yield_now().await;
            done_tx.send(()).unwrap();
        });
        shutdown.trigger();
        shutdown.drain(Duration::from_secs(5)).await.unwrap();
        done_rx.await.expect("task finished before drain returned");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_is_bounded_by_its_timeout() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        shutdown.trigger();
        let err = shutdown.drain(Duration::from_secs(3)).await.unwrap_err();
        assert_eq!(err.still_running, 1);
        assert!(err.to_string().contains("3s"), "{err}");
    }
}
