//! What a distributed benchmark leaves on the shared servers, removed once it has stopped the
//! system: its PostgreSQL schemas, its NATS streams and its Redis keys, every one named after
//! the run. Left in place they add up fast (each run of the standard scenarios stores about
//! 120 MB of streams, 120 MB of tables and 60 MB of Redis memory, which Redis never frees).

use futures::StreamExt;

/// Everything one distributed run made, by name.
#[derive(Debug, Clone)]
pub struct Leftovers {
    /// The PostgreSQL server URL (with its database) the schemas are in.
    pub postgres: String,
    pub schemas: Vec<String>,
    pub nats: String,
    /// Streams whose name starts with this (`{prefix}-`).
    pub stream_prefix: String,
    /// The Redis server URL (with its database number).
    pub redis: String,
    /// Keys matching `{prefix}:*`.
    pub key_prefix: String,
}

/// How much was removed.
#[derive(Debug, Default, PartialEq)]
pub struct Removed {
    pub schemas: usize,
    pub streams: usize,
    pub keys: usize,
}

impl Leftovers {
    /// Removes all of it; every server is tried even when another fails.
    pub async fn remove(&self) -> anyhow::Result<Removed> {
        let schemas = self.drop_schemas();
        let streams = self.delete_streams().await;
        let keys = self.delete_keys().await;
        Ok(Removed { schemas: schemas?, streams: streams?, keys: keys? })
    }

    fn drop_schemas(&self) -> anyhow::Result<usize> {
        if self.schemas.is_empty() {
            return Ok(0);
        }
        let drops: String = self.schemas.iter().map(|s| format!("DROP SCHEMA IF EXISTS {s} CASCADE;")).collect();
        let sql = format!("SET client_min_messages = warning; {drops}");
        let status = std::process::Command::new("psql")
            .args([self.postgres.as_str(), "-qc", &sql])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "psql could not drop the run's schemas on {}", self.postgres);
        Ok(self.schemas.len())
    }

    async fn delete_streams(&self) -> anyhow::Result<usize> {
        let client = async_nats::connect(self.nats.split('?').next().unwrap_or(&self.nats)).await?;
        let jetstream = async_nats::jetstream::new(client);
        let mut names = jetstream.stream_names();
        let mut ours = Vec::new();
        while let Some(name) = names.next().await {
            let name = name?;
            if name.starts_with(&self.stream_prefix) {
                ours.push(name);
            }
        }
        for name in &ours {
            jetstream.delete_stream(name).await?;
        }
        Ok(ours.len())
    }

    async fn delete_keys(&self) -> anyhow::Result<usize> {
        let client = redis::Client::open(self.redis.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}:*", self.key_prefix);
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                let _: usize = redis::cmd("UNLINK").arg(&keys).query_async(&mut connection).await?;
                deleted += keys.len();
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
