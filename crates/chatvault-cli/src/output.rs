//! How commands print: aligned tables for people, JSON for scripts, and
//! times and sizes in a readable form.
//!
//! Everything goes through fallible writes ([`outln!`], [`Table::print`],
//! [`json`]) so that a closed stdout comes back as an error that `main`
//! ends quietly ([`is_closed_stdout`]) instead of a panic. Text that came
//! from a record (titles, content) passes through [`text`] or
//! [`multiline`] before a person sees it.

/// `println!` that returns a write error (`?`) instead of panicking, so a
/// closed pipe ends the command normally.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

use anyhow::Result;
use chatvault::Timestamp;
use chatvault_core::RecordId;
use serde::Serialize;
use std::io::Write;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // As an `io::Error`, a closed pipe is recognised by `is_closed_stdout`.
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// What a command that creates something prints: the whole record as JSON
/// with `--json`, otherwise only its id (for scripts to capture).
pub fn created<T: Serialize>(as_json: bool, value: &T, id: impl std::fmt::Display) -> Result<()> {
    if as_json {
        json(value)
    } else {
        outln!("{id}");
        Ok(())
    }
}

/// Says on stderr that a listing skipped records it cannot read
/// (damaged, or tampered with), naming them; nothing when there are none.
pub fn warn_damaged(what: &str, ids: &[RecordId]) {
    if ids.is_empty() {
        return;
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    eprintln!(
        "warning: skipped {} damaged {what}(s) that cannot be read: {} (`chatvault stats` \
         counts them all)",
        ids.len(),
        ids.join(", ")
    );
}

/// A listing for `--json`: the readable records, then one
/// `{"id": ID, "damaged": true}` entry for each one that cannot be read.
pub fn with_damaged<T: Serialize>(
    items: &[T],
    damaged: &[RecordId],
) -> Result<Vec<serde_json::Value>> {
    let mut out = items
        .iter()
        .map(serde_json::to_value)
        .collect::<serde_json::Result<Vec<_>>>()?;
    out.extend(
        damaged
            .iter()
            .map(|id| serde_json::json!({ "id": id.to_string(), "damaged": true })),
    );
    Ok(out)
}

/// Whether `e` is stdout closed by its reader (`EPIPE`): a normal end.
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Record text for one line of human output: every control character
/// (C0, DEL, C1: ESC, CSI, BEL, CR, newline, tab...) is shown escaped as
/// `\u{1b}`, so it cannot move the cursor or rewrite the screen.
pub fn text(s: &str) -> String {
    escape(s, |_| false)
}

/// Record text shown over several lines: like [`text`], but newlines and
/// tabs are kept.
pub fn multiline(s: &str) -> String {
    escape(s, |c| c == '\n' || c == '\t')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && !keep(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A UTC time as RFC 3339 with milliseconds.
pub fn time(t: Timestamp) -> String {
    let nanos = i128::from(t.as_millis()) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{}ms", t.as_millis()))
}

/// A time for a person reading a table: how long ago it was ("just now",
/// "5 minutes ago", "3 days ago"), or its date once that is more than a
/// month back (or in the future). `--json` keeps machine values instead.
pub fn ago(t: Timestamp) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    ago_at(t, Timestamp(now))
}

fn ago_at(t: Timestamp, now: Timestamp) -> String {
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match now.as_millis() - t.as_millis() {
        d if !(-MINUTE..30 * DAY).contains(&d) => time(t).chars().take(10).collect(),
        d if d < MINUTE => "just now".to_owned(),
        d if d < HOUR => plural(d / MINUTE, "minute"),
        d if d < DAY => plural(d / HOUR, "hour"),
        d => plural(d / DAY, "day"),
    }
}

/// A byte count in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The first line of `s`, cut to `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    let cut: String = line.chars().take(max).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// A table with left-aligned columns.
pub struct Table<const N: usize> {
    header: [String; N],
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    /// A table with these column titles.
    pub fn new(header: [&str; N]) -> Self {
        Self {
            header: header.map(str::to_owned),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    /// Prints the table on stdout.
    pub fn print(&self) -> std::io::Result<()> {
        let mut widths = [0usize; N];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == N {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(w - cell.chars().count() + 2));
                }
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_how_long_ago_then_as_dates() {
        let now = Timestamp(1_764_633_600_000); // 2025-12-02T00:00:00Z
        let before = |ms: i64| ago_at(Timestamp(now.as_millis() - ms), now);
        assert_eq!(before(0), "just now");
        assert_eq!(before(59_000), "just now");
        assert_eq!(before(60_000), "1 minute ago");
        assert_eq!(before(5 * 60_000), "5 minutes ago");
        assert_eq!(before(3_600_000), "1 hour ago");
        assert_eq!(before(3 * 86_400_000 + 5), "3 days ago");
        assert_eq!(before(40 * 86_400_000), "2025-10-23");
        assert_eq!(
            before(-86_400_000),
            "2025-12-03",
            "a clock ahead shows the date"
        );
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2_411_724), "2.3 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
