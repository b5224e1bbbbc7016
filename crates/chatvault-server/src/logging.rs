//! The server's log filter: whatever `RUST_LOG` asks for, except from the
//! dependencies that log secrets.
//!
//! tungstenite logs every WebSocket message and frame with its payload at
//! TRACE ("Received message {...}"), and a socket's first message is
//! `{"type":"auth","token":"..."}`: with `RUST_LOG=trace` the server would
//! write session tokens to its log. Its targets are held at INFO, where it
//! logs nothing of a payload. `tests/logs.rs` checks a whole flow at TRACE.

use tracing_subscriber::filter::{Directive, LevelFilter};
use tracing_subscriber::EnvFilter;

/// Targets held at INFO whatever is asked for.
const PAYLOAD_LOGGERS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// `requested` (e.g. from `RUST_LOG`) with the payload-logging targets
/// held at INFO (or below, if `requested` asks for less).
pub fn log_filter(requested: EnvFilter) -> EnvFilter {
    let cap = requested
        .max_level_hint()
        .map_or(LevelFilter::INFO, |level| level.min(LevelFilter::INFO));
    PAYLOAD_LOGGERS.iter().fold(requested, |filter, target| {
        match format!("{target}={cap}").parse::<Directive>() {
            Ok(directive) => filter.add_directive(directive),
            // Unreachable: a fixed target and a level always parse.
            Err(_) => filter,
        }
    })
}
