//! Native unlock time at the default key-derivation parameters, the
//! baseline of the browser's unlock figure (`cargo xtask bench --browser`):
//! creates an encrypted vault in memory, then reopens it with its
//! passphrase three times and prints the median in milliseconds as JSON.

use chatvault::{MemoryStore, Store, Vault, VaultOptions};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> chatvault::Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let passphrase = "bench passphrase";
    Vault::open_encrypted(store.clone(), passphrase, VaultOptions::default()).await?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        Vault::open_encrypted(store.clone(), passphrase, VaultOptions::default()).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    // The one line the caller parses: a tool's output, not a log.
    println!("{{\"unlockMs\":{:.1}}}", times[1]);
    Ok(())
}
