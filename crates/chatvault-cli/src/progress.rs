//! The one way long work reports progress: an indicatif bar on stderr
//! when it is a terminal, nothing otherwise (indicatif hides itself when
//! stderr is not a TTY), so scripts and logs stay clean.

#![allow(dead_code)] // Used by import/export and bulk commands.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `total` units of work (or a spinner when the total is
/// unknown), labelled `what`.
pub fn bar(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(what.to_owned());
    bar
}
