//! Project automation. Placeholder until the test pipeline lands.
fn main() -> anyhow::Result<()> {
    Ok(())
}
