pub async fn run(_s: &std::path::Path, _c: &str) -> anyhow::Result<()> { anyhow::bail!("todo") }
