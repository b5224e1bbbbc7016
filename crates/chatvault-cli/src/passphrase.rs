//! The one way the CLI obtains a passphrase: from a file named by an
//! environment variable, from an environment variable, or from an
//! interactive prompt without echo — never from a command-line flag, where
//! it would land in shell history and `ps`.

use anyhow::{bail, Context as _, Result};
use std::io::IsTerminal;
use zeroize::Zeroize as _;

/// A passphrase, wiped from memory when dropped.
pub struct Passphrase(String);

impl Passphrase {
    /// The passphrase text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        // Overwrite before the allocation is freed; zeroize's writes are
        // volatile, so the wipe is not optimized away.
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Where to look for one passphrase.
pub struct Source<'a> {
    /// Env var naming a file whose first line is the passphrase.
    pub file_var: &'a str,
    /// Env var holding the passphrase itself.
    pub value_var: &'a str,
    /// Prompt shown on the terminal.
    pub prompt: &'a str,
    /// Ask twice on a terminal and require both to match (new passphrases).
    pub confirm: bool,
    /// Hint printed when nothing is available, e.g. how to unlock.
    pub hint: &'a str,
}

/// Reads a passphrase from `source`, in order: file, variable, prompt.
pub fn read(source: &Source<'_>) -> Result<Passphrase> {
    if let Some(path) = std::env::var_os(source.file_var) {
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read passphrase file {} (from {})",
                std::path::Path::new(&path).display(),
                source.file_var
            )
        })?;
        let line = text.lines().next().unwrap_or("").to_owned();
        return non_empty(Passphrase(line), source.file_var);
    }
    if let Ok(value) = std::env::var(source.value_var) {
        return non_empty(Passphrase(value), source.value_var);
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("{}", source.hint);
    }
    let first = Passphrase(
        rpassword::prompt_password(source.prompt)
            .context("cannot read passphrase from terminal")?,
    );
    if source.confirm {
        let again = Passphrase(
            rpassword::prompt_password("Repeat to confirm: ")
                .context("cannot read passphrase from terminal")?,
        );
        if again.expose() != first.expose() {
            bail!("the passphrases do not match; nothing was changed");
        }
    }
    non_empty(first, "the prompt")
}

fn non_empty(p: Passphrase, from: &str) -> Result<Passphrase> {
    if p.expose().is_empty() {
        bail!("empty passphrase from {from}");
    }
    Ok(p)
}
