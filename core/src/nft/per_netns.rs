//! What is kept once per network namespace for the life of the process: a
//! netlink socket (and a libnftables context, which holds one) belongs to
//! the namespace it was opened in.

use std::sync::Mutex;

/// Values by the inode of their network namespace.
pub(super) struct PerNetns<T>(Mutex<Vec<(u64, T)>>);

impl<T> PerNetns<T> {
    pub(super) const fn new() -> Self {
        PerNetns(Mutex::new(Vec::new()))
    }

    /// Runs `f` on the calling thread's namespace's value, made by `make` on
    /// first use, under the lock: one user at a time.
    pub(super) fn with<R>(
        &self,
        make: impl FnOnce() -> std::io::Result<T>,
        f: impl FnOnce(&T) -> R,
    ) -> std::io::Result<R> {
        let netns = crate::netns::current_inode()?;
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let i = match held.iter().position(|(ns, _)| *ns == netns) {
            Some(i) => i,
            None => {
                held.push((netns, make()?));
                held.len() - 1
            }
        };
        Ok(f(&held[i].1))
    }
}
