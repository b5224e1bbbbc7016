//! The command-line grammar.

use chatvault::Role;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Local-first, encrypted chat history: manage a chatvault store.
#[derive(Debug, Parser)]
#[command(name = "chatvault", version, about, propagate_version = true)]
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
    /// CHATVAULT_NEW_PASSPHRASE).
    Passwd,
    /// Conversations.
    #[command(subcommand)]
    Conv(ConvCommand),
    /// Messages.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// What the vault holds and how much space it uses.
    Stats(JsonFlag),
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
        /// Its title.
        #[arg(long, short)]
        title: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List conversations, most recent activity first.
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
        /// The new title.
        #[arg(long, short)]
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
        /// The text; `-` reads it from standard input.
        #[arg(long)]
        content: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the latest messages of a conversation, oldest first.
    Ls {
        /// Conversation id.
        conversation: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a message.
    Rm {
        /// Message id.
        id: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}
