//! The server's handle on its store: every store call runs on the blocking pool (the
//! engines are synchronous), through this one type on the context.

use std::sync::Arc;

use berth_store::{Store, StoreError};

#[derive(Clone)]
pub struct StoreHandle(Arc<dyn Store>);

impl StoreHandle {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreHandle(store)
    }

    /// Runs `f` against the store off the async threads.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Engine(format!("store task failed: {e}")))?
    }
}
