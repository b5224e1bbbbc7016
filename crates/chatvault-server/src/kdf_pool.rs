//! [`KdfPool`]: the fixed set of threads that hash and verify auth keys.
//!
//! Every worker owns one Argon2 buffer, allocated when the pool starts and
//! reused for every job, and jobs wait in a bounded queue: the memory and
//! CPU that unauthenticated logins and registrations can claim are fixed at
//! startup, whatever the request rate. When the queue is full the caller
//! gets [`KdfError::Busy`] at once (the HTTP layer answers 503 with
//! `Retry-After`) instead of a growing backlog.
//!
//! Must never allocate Argon2 memory per job, grow the queue, or run
//! Argon2 on tokio's (elastic) blocking pool.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::auth::{hash_auth_key, verify_auth_key, AuthHashCost, CredentialError, HashMemory};
use crate::types::AuthKey;

/// Why a hashing job did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KdfError {
    /// Every worker is busy and the queue is full: retry shortly.
    #[error("password hashing queue is full")]
    Busy,
    /// The hasher itself failed (never caused by input).
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The workers are gone (the server is shutting down).
    #[error("password hashing workers stopped")]
    Stopped,
}

/// A unit of work: runs on a worker with that worker's memory.
type Job = Box<dyn FnOnce(&mut HashMemory) + Send>;

/// Size of the pool and its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfPoolConfig {
    /// Hashing threads, each holding one Argon2 buffer (default: the
    /// number of cores).
    pub workers: usize,
    /// Jobs that may wait for a worker; beyond it requests get 503
    /// (default 32 per worker).
    pub queue: usize,
    /// The Argon2id cost of stored hashes.
    pub cost: AuthHashCost,
}

impl Default for KdfPoolConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        KdfPoolConfig {
            workers,
            queue: 32 * workers,
            cost: AuthHashCost::default(),
        }
    }
}

/// Handle to the running workers; they stop once every handle is dropped
/// and the queue is empty.
#[derive(Clone)]
pub(crate) struct KdfPool {
    queue: SyncSender<Job>,
    cost: AuthHashCost,
}

impl KdfPool {
    /// Starts `config.workers` threads, each allocating its buffer now (so
    /// a cost the machine cannot afford fails at startup, not at login).
    pub(crate) fn start(config: KdfPoolConfig) -> Result<KdfPool, CredentialError> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(config.queue);
        let jobs = Arc::new(Mutex::new(jobs));
        for index in 0..config.workers.max(1) {
            let memory = HashMemory::new(config.cost)?;
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("chatvault-kdf-{index}"))
                .spawn(move || worker(&jobs, memory))
                .map_err(|e| CredentialError::new(format!("cannot start a KDF worker: {e}")))?;
        }
        Ok(KdfPool {
            queue,
            cost: config.cost,
        })
    }

    /// A fresh PHC hash of `key` at the configured cost.
    pub(crate) async fn hash(&self, key: AuthKey) -> Result<String, KdfError> {
        let cost = self.cost;
        self.run(move |memory| hash_auth_key(&key, cost, memory))
            .await
    }

    /// Whether `key` matches the stored hash `phc`.
    pub(crate) async fn verify(&self, phc: String, key: AuthKey) -> Result<bool, KdfError> {
        self.run(move |memory| verify_auth_key(&phc, &key, memory))
            .await
    }

    async fn run<T, F>(&self, f: F) -> Result<T, KdfError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HashMemory) -> Result<T, CredentialError> + Send + 'static,
    {
        let answer = self.submit(f)?;
        Ok(answer.await.map_err(|_| KdfError::Stopped)??)
    }

    /// Queues `f` without waiting: refused at once when the queue is full.
    fn submit<T, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T, CredentialError>>, KdfError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HashMemory) -> Result<T, CredentialError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The requester may have gone away (client disconnected).
            let _ = reply.send(f(memory));
        });
        match self.queue.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(KdfError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(KdfError::Stopped),
        }
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, mut memory: HashMemory) {
    loop {
        // Hold the lock only to take a job, never while hashing.
        let next = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match next {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> AuthHashCost {
        AuthHashCost { m_kib: 64, t: 1 }
    }

    #[tokio::test]
    async fn hashes_and_verifies_on_the_workers() {
        let pool = KdfPool::start(KdfPoolConfig {
            workers: 2,
            queue: 4,
            cost: small(),
        })
        .unwrap();
        let phc = pool.hash(AuthKey::from_bytes([1; 32])).await.unwrap();
        assert!(pool
            .verify(phc.clone(), AuthKey::from_bytes([1; 32]))
            .await
            .unwrap());
        assert!(!pool
            .verify(phc, AuthKey::from_bytes([2; 32]))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let pool = KdfPool::start(KdfPoolConfig {
            workers: 1,
            queue: 1,
            cost: small(),
        })
        .unwrap();
        // Park the only worker until released, then fill the one queue slot.
        let (release, parked) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let blocker = pool
            .submit(move |_| {
                let _ = started_tx.send(());
                let _ = parked.recv();
                Ok(())
            })
            .unwrap();
        started.recv().unwrap();
        let queued = pool.submit(|_| Ok(7)).unwrap();
        assert!(matches!(pool.submit(|_| Ok(8)), Err(KdfError::Busy)));
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 7);
    }
}
