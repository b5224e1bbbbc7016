//! The command-line grammar.

use chatvault::Role;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Local-first, encrypted chat history: manage a chatvault store.
#[derive(Debug, Parser)]
#[command(
    name = "chatvault",
    version,
    about,
    propagate_version = true,
    after_help = "Exit status:\n  \
        0  success (also when a reader closes the output early, as `| head` does)\n  \
        1  error: one line on stderr says what went wrong\n  \
        2  malformed command line\n  \
        3  `import` rejected records (the others were imported; the report lists them)"
)]
pub struct Cli {
    /// The vault file (default: `vault.db` in the user's data directory).
    #[arg(long, global = true, env = "CHATVAULT_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty vault.
    Init {
        /// Encrypt the vault with a passphrase (asked twice on a terminal,
        /// or from CHATVAULT_PASSPHRASE_FILE / CHATVAULT_PASSPHRASE).
        #[arg(long)]
        encrypt: bool,
    },
    /// Change the passphrase of an encrypted vault (the new one is asked
    /// twice, or read from CHATVAULT_NEW_PASSPHRASE_FILE /
    /// CHATVAULT_NEW_PASSPHRASE). A vault linked to a sync account changes
    /// the account first (its other sessions are signed out); if the
    /// server cannot be reached, nothing is changed anywhere.
    Passwd {
        /// Also rotate the data key: everything written from now on is
        /// sealed with a new key that an old copy of the key envelope
        /// cannot open (see SECURITY.md). Old records stay readable; run
        /// `chatvault rekey` to re-seal them.
        #[arg(long)]
        rotate_key: bool,
    },
    /// Re-seal every record under the newest data key (after
    /// `passwd --rotate-key`, or on a vault written by an older chatvault).
    Rekey,
    /// Conversations.
    #[command(subcommand)]
    Conv(ConvCommand),
    /// Messages.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// What the vault holds and how much space it uses.
    Stats(JsonFlag),
    /// Delete old history by age, count or size: now, or as a stored policy
    /// applied when the vault is opened (at most once a day).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Shrink the vault file: give the space of deleted data back to the
    /// disk (WAL checkpoint + VACUUM).
    Compact(JsonFlag),
    /// Write the whole vault to an export file (JSON, optionally encrypted).
    Export(ExportArgs),
    /// Import an export file, or a chat app's JSON export: the whole file is
    /// validated first, then applied newer-wins in one transaction.
    Import(ImportArgs),
    /// Sync this encrypted vault with a chatvault server (end-to-end
    /// encrypted: the server only ever holds ciphertext).
    #[command(subcommand)]
    Sync(SyncCommand),
}

/// `--json`: machine-readable output.
#[derive(Debug, Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print JSON (the model's camelCase fields) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConvCommand {
    /// Create a conversation and print its id.
    New {
        /// Its title (not empty).
        #[arg(long, short, value_parser = parse_title)]
        title: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List conversations, most recent activity first. A conversation that
    /// cannot be read (damaged) is skipped and named on stderr; with
    /// `--json` it is listed as `{"id": ID, "damaged": true}`.
    Ls {
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a conversation and its latest messages.
    Show {
        /// Conversation id.
        id: String,
        /// How many of the latest messages to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Rename a conversation.
    Rename {
        /// Conversation id.
        id: String,
        /// The new title (not empty).
        #[arg(long, short, value_parser = parse_title)]
        title: String,
    },
    /// Delete a conversation and all its messages.
    Rm {
        /// Conversation id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MsgCommand {
    /// Add a message to a conversation and print its id.
    Add {
        /// Conversation id.
        conversation: String,
        /// Who speaks: user, assistant, system or tool.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The text; `-` reads it from standard input. It may be empty: a
        /// tool call's turn often has no text.
        #[arg(long)]
        content: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the latest messages of a conversation, oldest first. A message
    /// that cannot be read (damaged) is skipped and named on stderr; with
    /// `--json` it is listed as `{"id": ID, "damaged": true}`.
    Ls {
        /// Conversation id.
        conversation: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Page back: the messages written before this message id (the
        /// first id of the previous listing).
        #[arg(long, value_name = "ID")]
        before: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a message.
    Rm {
        /// Message id.
        id: String,
    },
}

/// A title a person can find the conversation by: not empty, not only
/// spaces.
fn parse_title(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "a conversation needs a title (it is what `conv ls` shows); \
                    give one that is not empty"
                .into(),
        );
    }
    Ok(s.to_owned())
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Apply a policy now: the limits given, or else the stored policy.
    /// Pinned conversations, and unsynced ones while a sync server is
    /// configured, are never deleted.
    Run {
        #[command(flatten)]
        limits: RetentionLimits,
        /// Show what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Store a policy in the vault; it is applied when the vault is opened,
    /// at most once a day, saying on stderr what it removed. Prints what it
    /// would delete now and asks to confirm (`--yes` without a terminal).
    /// A limit of 0 is refused: it would delete everything.
    Set {
        #[command(flatten)]
        limits: RetentionLimits,
        /// Store it without asking (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Show the stored policy and when it last ran.
    Show(JsonFlag),
    /// Remove the stored policy.
    Clear,
}

/// The limits of a retention policy (any subset).
#[derive(Debug, Args, Clone, Copy)]
pub struct RetentionLimits {
    /// Delete conversations inactive for more than this many days.
    #[arg(long, value_name = "DAYS")]
    pub max_age_days: Option<u32>,
    /// Keep at most this many conversations (the most recently active).
    #[arg(long, value_name = "N")]
    pub max_conversations: Option<u64>,
    /// Keep at most this much stored data, oldest conversations going first
    /// (e.g. 500000, 10MB, 1.5GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file (through a temporary file renamed into place, so
    /// a failed export never leaves a partial file under this name);
    /// standard output if omitted.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Encrypt the file with a passphrase (asked twice on a terminal, or
    /// from CHATVAULT_EXPORT_PASSPHRASE_FILE / CHATVAULT_EXPORT_PASSPHRASE).
    #[arg(long)]
    pub encrypt: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export file (an encrypted one asks for its passphrase, or reads
    /// CHATVAULT_EXPORT_PASSPHRASE_FILE / CHATVAULT_EXPORT_PASSPHRASE).
    pub file: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// A byte size: a number with an optional unit, decimal (kB, MB, GB, TB:
/// powers of 1000) or binary (KiB, MiB, GiB, TiB: powers of 1024), e.g.
/// `500000`, `10MB`, `1.5GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {s:?}: use B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
            ))
        }
    };
    let bad = || format!("{s:?} is not a size (e.g. 500000, 10MB, 1.5GiB)");
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(factor).ok_or_else(bad);
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (value * factor as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("500000"), Ok(500_000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("10 mb"), Ok(10_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in [
            "",
            "MB",
            "ten",
            "1.2.3MB",
            "5 parsecs",
            "-1",
            "99999999999TB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("3XB").unwrap_err().contains("unknown size unit"));
    }
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Create an account on the server for this vault, then sync.
    Register(SyncServerArgs),
    /// Connect this vault to its existing account, then sync.
    Login(SyncServerArgs),
    /// A new device: create this vault from the account (same passphrase,
    /// same data key), then download everything.
    Join(SyncServerArgs),
    /// Push every pending change and pull the server's. Shows progress on
    /// a terminal; exits non-zero, saying how many are left, if it could
    /// not send them all.
    Now(JsonFlag),
    /// What sync knows without asking the server: server, account, pending
    /// and parked changes, the last error.
    Status(JsonFlag),
    /// Changes the server refused, parked until retried or discarded.
    DeadLetters(DeadLetterArgs),
    /// Forget the server and account this vault syncs with (keeps every
    /// record and pending change), e.g. before `register` with another
    /// account.
    Unlink,
    /// End this device's session on the server and forget it here.
    Logout,
    /// The account's sessions (signed-in devices and browsers); with
    /// `--revoke-others`, sign out every one but this device.
    Sessions(SessionsArgs),
    /// Stay connected and keep this vault in sync until SIGINT or SIGTERM:
    /// pulls when the server says something changed, pushes as changes
    /// appear (from any process writing the vault), reconnects with
    /// backoff, and prints a line whenever the state changes.
    Watch(WatchArgs),
}

/// `sync watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `sync sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Sign out every other session of the account (a lost device, say).
    #[arg(long)]
    pub revoke_others: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `sync dead-letters`: list, or act on one or all.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct DeadLetterArgs {
    /// Make the parked change with this id (op id or record id) pending
    /// again.
    #[arg(long, value_name = "ID")]
    pub retry: Option<String>,
    /// Make every parked change pending again.
    #[arg(long)]
    pub all: bool,
    /// Drop the parked change with this id for good (the record stays on
    /// this device, unsynced). Asks for confirmation on a terminal.
    #[arg(long, value_name = "ID")]
    pub discard: Option<String>,
    /// Discard without asking.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// Which server and account.
#[derive(Debug, Args)]
pub struct SyncServerArgs {
    /// Server URL, e.g. http://127.0.0.1:8787.
    #[arg(long, env = "CHATVAULT_SERVER")]
    pub server: String,
    /// Account name on the server.
    #[arg(long, env = "CHATVAULT_USER")]
    pub user: String,
    #[command(flatten)]
    pub json: JsonFlag,
}
