//! Bounds on what clients can make the daemon hold. Without them a query
//! flood against a dead upstream piles up forwards that each hold a socket
//! for the whole upstream timeout, and a failing `accept` spins. (DNS over
//! TCP is bounded per listener and per client in [`super::tcp_clients`].)

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Control-socket clients served at once; more wait in the backlog.
pub const CONTROL_CLIENTS: usize = 128;
/// Forwards in flight at once; a query beyond gets SERVFAIL at once.
pub const FORWARDS: usize = 256;
/// The pause after `accept` failed (out of descriptors, say), so the loop
/// does not spin while the cause lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

static FORWARD_SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(FORWARDS)));

/// A slot for one forward, or `None` when all are taken.
pub fn forward_slot() -> Option<OwnedSemaphorePermit> {
    FORWARD_SLOTS.clone().try_acquire_owned().ok()
}

/// The clients the control socket serves.
#[derive(Clone)]
pub struct ClientSlots(Arc<Semaphore>);

impl ClientSlots {
    pub fn new() -> ClientSlots {
        ClientSlots(Arc::new(Semaphore::new(CONTROL_CLIENTS)))
    }

    /// Waits until a client may be accepted; the slot frees when the permit drops.
    pub async fn wait(&self) -> OwnedSemaphorePermit {
        self.0
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// What an accept loop does when `accept` failed.
pub async fn accept_failed(what: &str, error: std::io::Error) {
    tracing::debug!(error = %error, "{what}: accept failed");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}
