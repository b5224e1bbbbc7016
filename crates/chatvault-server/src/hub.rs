//! The poke hub: which WebSockets are open for which account in this
//! process, and the fan-out of "something new up to cursor N" to them.
//!
//! Each socket gets a small bounded queue. A poke never waits: if a
//! socket's queue is full, that socket is cut loose (its task sees the
//! queue close and disconnects the client), so a slow client can never
//! make the server buffer without bound. Pokes carry no data — a missed one
//! costs latency, never correctness — so per account only pokes newer than
//! the last one sent are delivered (this also drops the echo of a local
//! commit arriving back through PostgreSQL NOTIFY).
//!
//! Must never block or await while holding its lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, watch};

use crate::types::{AccountId, Cursor};

#[derive(Debug, Default)]
struct Account {
    /// Newest head poked so far.
    last_poked: Cursor,
    sockets: Vec<(u64, mpsc::Sender<Cursor>)>,
}

#[derive(Debug)]
struct Inner {
    accounts: Mutex<HashMap<AccountId, Account>>,
    next_id: AtomicU64,
    /// Socket tasks alive, from the upgrade request until the task has
    /// sent its close frame. Unlike the subscriptions, a socket cut loose
    /// for being slow still counts until its task ends.
    tasks: watch::Sender<usize>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            accounts: Mutex::default(),
            next_id: AtomicU64::new(0),
            tasks: watch::Sender::new(0),
        }
    }
}

/// Per-process registry of open sockets. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// One socket's registration: receives pokes; unregisters on drop.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    account: AccountId,
    id: u64,
    /// Pokes for this socket. `None` from `recv` means the hub cut the
    /// socket loose because its queue overflowed.
    pub pokes: mpsc::Receiver<Cursor>,
}

/// Held by one socket's task from the upgrade request until the task ends;
/// see [`Hub::wait_for_sockets`].
#[derive(Debug)]
pub struct SocketTask {
    hub: Hub,
}

impl Drop for SocketTask {
    fn drop(&mut self) {
        self.hub.inner.tasks.send_modify(|n| *n -= 1);
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<AccountId, Account>> {
        // The map stays consistent even if a holder panicked: every
        // critical section is a single insert/retain.
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a socket for `account` with a queue of `capacity` pokes.
    pub fn subscribe(&self, account: AccountId, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(account)
            .or_default()
            .sockets
            .push((id, tx));
        Subscription {
            hub: self.clone(),
            account,
            id,
            pokes: rx,
        }
    }

    /// Tells every socket of `account` that its feed now reaches `head`.
    /// Within one epoch only heads past the last one poked go out; a head
    /// in another epoch always does (after a restore the feed restarts
    /// lower).
    pub fn poke(&self, account: AccountId, head: Cursor) {
        let mut accounts = self.lock();
        let Some(entry) = accounts.get_mut(&account) else {
            return;
        };
        if head.epoch == entry.last_poked.epoch && head.seq <= entry.last_poked.seq {
            return;
        }
        entry.last_poked = head;
        entry.sockets.retain(|(id, tx)| match tx.try_send(head) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(%account, socket = id, "dropping a WebSocket too slow to take its pokes");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Open sockets, all accounts together.
    pub fn socket_count(&self) -> usize {
        self.lock().values().map(|a| a.sockets.len()).sum()
    }

    /// Counts one socket task until the returned guard drops.
    pub fn track_socket(&self) -> SocketTask {
        self.inner.tasks.send_modify(|n| *n += 1);
        SocketTask { hub: self.clone() }
    }

    /// Waits until every tracked socket task has ended, at most `limit`;
    /// `false` if some were still running. Shutdown calls this after
    /// telling the sockets to close, so their close frames are sent before
    /// the process exits (upgraded connections are no longer hyper's to
    /// wait for).
    pub async fn wait_for_sockets(&self, limit: std::time::Duration) -> bool {
        let mut tasks = self.inner.tasks.subscribe();
        tokio::time::timeout(limit, tasks.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut accounts = self.hub.lock();
        if let Some(entry) = accounts.get_mut(&self.account) {
            entry.sockets.retain(|(id, _)| *id != self.id);
            if entry.sockets.is_empty() {
                accounts.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Epoch, Seq};
    use std::sync::LazyLock;
    use std::time::Duration;

    static EPOCH: LazyLock<Epoch> = LazyLock::new(Epoch::random);

    fn at(n: u64) -> Cursor {
        Cursor::new(*EPOCH, Seq(n))
    }

    #[test]
    fn pokes_reach_only_their_account_and_only_when_newer() {
        let hub = Hub::default();
        let (a, b) = (AccountId::new(), AccountId::new());
        let mut sa = hub.subscribe(a, 4);
        let mut sb = hub.subscribe(b, 4);
        hub.poke(a, at(3));
        hub.poke(a, at(3));
        hub.poke(a, at(2));
        assert_eq!(sa.pokes.try_recv().ok(), Some(at(3)));
        assert!(sa.pokes.try_recv().is_err());
        assert!(sb.pokes.try_recv().is_err());
        assert_eq!(hub.socket_count(), 2);
        drop(sa);
        assert_eq!(hub.socket_count(), 1);
    }

    #[test]
    fn a_head_in_a_new_epoch_is_poked_even_if_lower() {
        let hub = Hub::default();
        let a = AccountId::new();
        let mut s = hub.subscribe(a, 4);
        hub.poke(a, at(9));
        let restored = Cursor::new(Epoch::random(), Seq(2));
        hub.poke(a, restored);
        assert_eq!(s.pokes.try_recv().ok(), Some(at(9)));
        assert_eq!(s.pokes.try_recv().ok(), Some(restored));
    }

    #[tokio::test]
    async fn shutdown_waits_for_socket_tasks_only_as_long_as_they_run() {
        let hub = Hub::default();
        assert!(hub.wait_for_sockets(Duration::ZERO).await, "none open");
        let task = hub.track_socket();
        assert!(!hub.wait_for_sockets(Duration::from_millis(20)).await);
        let waiter = tokio::spawn({
            let hub = hub.clone();
            async move { hub.wait_for_sockets(Duration::from_secs(5)).await }
        });
        drop(task);
        assert!(
            waiter.await.expect("waiter"),
            "woken by the last task ending"
        );
    }

    #[test]
    fn a_full_queue_cuts_the_socket_loose() {
        let hub = Hub::default();
        let a = AccountId::new();
        let mut s = hub.subscribe(a, 2);
        for n in 1..=3 {
            hub.poke(a, at(n));
        }
        assert_eq!(hub.socket_count(), 0);
        assert_eq!(s.pokes.try_recv().ok(), Some(at(1)));
        assert_eq!(s.pokes.try_recv().ok(), Some(at(2)));
        // Queue closed: the socket task sees `None` and disconnects.
        assert!(matches!(
            s.pokes.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
