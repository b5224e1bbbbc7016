//! [`SyncError`]: every way a sync operation can fail, with messages a
//! user can act on, and which failures are worth retrying on their own.

use std::time::Duration;

use chatvault::VaultError;
use chatvault_core::ErrorCode;
use chatvault_crypto::CryptoError;

/// Everything the sync client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The server refused this username with this passphrase. Usernames
    /// are case-insensitive; a server cannot tell a wrong passphrase from
    /// an unknown username (neither can this client).
    #[error(
        "the server refused {username:?} with this passphrase: wrong passphrase, \
         or no such account on this server"
    )]
    InvalidCredentials {
        /// The username tried.
        username: String,
    },
    /// The passphrase does not open this vault's key envelope.
    #[error("wrong passphrase for this vault")]
    WrongPassphrase,
    /// Signed out: the session ended and this device's key no longer signs
    /// in (typically the passphrase was changed on another device). Call
    /// [`SyncClient::sign_in`](crate::SyncClient::sign_in) with the current
    /// passphrase.
    #[error("signed out of the sync server: {0}")]
    Unauthorized(String),
    /// Too many failed sign-ins for this account; the server refuses more
    /// for a while.
    #[error(
        "too many failed sign-ins for this account: try again in {} s",
        retry_after.as_secs().max(1)
    )]
    TooManyAttempts {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Registering a name that exists.
    #[error("the username {0:?} is taken on this server")]
    UsernameTaken(String),
    /// Only encrypted vaults sync: the server must never see plaintext.
    #[error("this vault is not encrypted; only encrypted vaults can sync")]
    NotEncrypted,
    /// The server answered with an error.
    #[error("sync server error {status} {code}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's machine-readable code.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// `Retry-After`, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the sync server: {0}")]
    Network(String),
    /// The server's answer does not follow the protocol.
    #[error("unexpected answer from the sync server: {0}")]
    Protocol(String),
    /// Changes from the server are stamped more than an hour ahead of both
    /// this device's clock and the server's time. They are fetched again on the next sync; nothing is
    /// lost, but nothing new arrives until the clock is right.
    #[error(
        "this device's clock is behind the server's by more than an hour \
         ({0}); set the clock right to receive new changes"
    )]
    ClockBehind(String),
    /// The server sent changes this build cannot read (a newer client wrote
    /// them). The readable ones were applied; the pull cursor was **not**
    /// moved past them, so nothing is skipped: new changes arrive again
    /// once chatvault is upgraded. Pushing keeps working.
    #[error(
        "the server sent {count} change(s) this version of chatvault cannot read \
         (first: {first}); upgrade chatvault — pulling is held until then so nothing is skipped"
    )]
    UnreadableChange {
        /// How many changes of the page could not be read.
        count: usize,
        /// Why the first of them could not.
        first: String,
    },
    /// The server asked for a resync again right after one: stopping
    /// instead of looping. Usually a server restored from an old backup or
    /// misconfigured; nothing local was lost.
    #[error(
        "the server asked for a full resync again right after one; \
         stopped instead of looping (is the server's database being restored?)"
    )]
    ResyncLoop,
    /// The server URL is not usable.
    #[error("invalid sync server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local vault failed.
    #[error(transparent)]
    Vault(VaultError),
    /// Key derivation or the key envelope failed.
    #[error("encryption: {0}")]
    Crypto(CryptoError),
}

impl SyncError {
    /// Whether trying again later, unchanged, may succeed: network
    /// failures, 5xx, 408 and 429 answers. Everything else needs a change
    /// first (a passphrase, a clock, a server fix).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Network(_) | SyncError::TooManyAttempts { .. } => true,
            SyncError::Server { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// How long the server asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::TooManyAttempts { retry_after } => Some(*retry_after),
            SyncError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The server's error code, for [`SyncError::Server`].
    pub fn server_code(&self) -> Option<&ErrorCode> {
        match self {
            SyncError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The stable name of the situation, for apps and bindings to branch
    /// on (the JavaScript package's `ChatvaultError.code`): `offline` for a
    /// server that cannot be reached, `unauthorized` for a device that must
    /// sign in again, the server's own code (`rate_limited`,
    /// `payload_too_large`...) for its refusals, the vault's
    /// ([`VaultError::code`]) for local failures.
    pub fn code(&self) -> &str {
        match self {
            SyncError::InvalidCredentials { .. } => "invalid_credentials",
            SyncError::WrongPassphrase => "wrong_passphrase",
            SyncError::Unauthorized(_) => "unauthorized",
            SyncError::TooManyAttempts { .. } => "too_many_attempts",
            SyncError::UsernameTaken(_) => "username_taken",
            SyncError::NotEncrypted => "not_encrypted",
            SyncError::Server { code, .. } => code.as_str(),
            SyncError::Network(_) => "offline",
            SyncError::Protocol(_) => "protocol",
            SyncError::ClockBehind(_) => "clock_behind",
            SyncError::UnreadableChange { .. } => "unreadable_change",
            SyncError::ResyncLoop => "resync_loop",
            SyncError::InvalidUrl { .. } => "invalid_url",
            SyncError::Vault(e) => e.code(),
            SyncError::Crypto(_) => "crypto",
        }
    }

    pub(crate) fn is_status(&self, wanted: u16) -> bool {
        matches!(self, SyncError::Server { status, .. } if *status == wanted)
    }
}

impl From<VaultError> for SyncError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::WrongPassphrase => SyncError::WrongPassphrase,
            VaultError::NotEncrypted => SyncError::NotEncrypted,
            other => SyncError::Vault(other),
        }
    }
}

impl From<CryptoError> for SyncError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::WrongPassphrase => SyncError::WrongPassphrase,
            other => SyncError::Crypto(other),
        }
    }
}

/// Result alias for sync operations.
pub type Result<T, E = SyncError> = std::result::Result<T, E>;
