//! Integration tests for chatvault-sync against a real, in-process
//! `chatvault-server` (SQLite, manual clock, port 0), one binary for all:
//!
//! - `devices` — two devices converge (writes, edits, deletes, concurrent
//!   edits by HLC); the server's database holds no plaintext.
//! - `accounts` — wrong passphrases and other refusals; passphrase change
//!   with the other device signed out, then recovered.
//! - `outbox` — offline writes pushed once the server is back; refused
//!   changes dead-lettered without blocking, then retried.
//! - `realtime` — a poke makes the other device pull.
//! - `resync` — a cursor behind the tombstone horizon rebuilds from the
//!   snapshot, keeping pending local changes; no resync loop.
//! - `restore` — the server's database restored from an older backup:
//!   devices push back what it lacks, deleting nothing.
//! - `deletion` — a conversation's deletion against a concurrent rename
//!   and message, in every order, online and offline, before and after
//!   the tombstone horizon.
//! - `migrate` — a vault moved to another store pushes exactly what it
//!   would have pushed before the move.
//! - `sim` — the seeded simulation: three devices, random writes, syncs,
//!   outages, restarts and retention, a server that restarts, purges and
//!   is restored, a transport that cuts, loses and refuses; reads checked
//!   as they happen, every record's final state against the rules.

#![cfg(not(target_family = "wasm"))]

mod common;

mod accounts;
mod deletion;
mod devices;
mod legacy;
mod load;
mod migrate;
mod outbox;
mod parking;
mod realtime;
mod restore;
mod resync;
mod sim;
