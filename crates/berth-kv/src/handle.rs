//! The store for async code: calls run on tokio's blocking pool (the engines block on
//! disk and, for PostgreSQL, on a driver that must not run inside a runtime thread).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::{Change, Entry, KvError, KvStore, Space, Txn, TxnOutcome};

#[derive(Clone)]
pub struct KvHandle {
    store: Arc<dyn KvStore>,
}

impl KvHandle {
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        KvHandle { store }
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Runs `f` on the store on a blocking thread: every call the trait has (history,
    /// pruning, ...) without a wrapper each.
    pub async fn run<T, F>(&self, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KvStore) -> Result<T, KvError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(result) => result,
            // A panic in the store is a bug; let it surface where it would have without
            // the thread hop.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(KvError::Cancelled),
        }
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, KvError> {
        self.run(move |s| s.txn(&txn)).await
    }

    pub async fn get(&self, space: &Space, key: &str) -> Result<Option<Entry>, KvError> {
        let (space, key) = (space.clone(), key.to_string());
        self.run(move |s| s.get(&space, &key)).await
    }

    pub async fn list(
        &self,
        space: &Space,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, KvError> {
        let (space, prefix) = (space.clone(), prefix.to_string());
        self.run(move |s| s.list(&space, &prefix, limit)).await
    }

    pub async fn keys(
        &self,
        space: &Space,
        prefix: &str,
        separator: Option<&str>,
    ) -> Result<Vec<String>, KvError> {
        let (space, prefix) = (space.clone(), prefix.to_string());
        let separator = separator.map(str::to_string);
        self.run(move |s| s.keys(&space, &prefix, separator.as_deref()))
            .await
    }

    pub fn current_index(&self) -> u64 {
        self.store.current_index()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.store.subscribe()
    }

    pub fn watch_index(&self) -> watch::Receiver<u64> {
        self.store.watch_index()
    }

    /// A blocking read's wait: returns once the index is past `index`, or after `timeout`
    /// (Consul's `wait`), with the index then known. The caller reads the store
    /// afterwards and reports the returned index with what it read.
    pub async fn wait_past(&self, index: u64, timeout: Duration) -> u64 {
        let mut watch = self.store.watch_index();
        // The sender lives as long as the store, which `self` keeps alive, so the wait
        // ends only by the index moving or the timeout.
        let _ = tokio::time::timeout(timeout, watch.wait_for(|i| *i > index)).await;
        *watch.borrow()
    }
}
