//! Redis plumbing shared by the cache and the quotas: one managed
//! connection that reconnects by itself, and a deadline on every call.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// A Redis call that failed or missed its deadline (the cause, for logs).
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(String);

/// One managed, multiplexed Redis connection that connects on first use
/// and reconnects by itself, with `timeout` on connecting and answering.
pub fn managed_connection(url: &str, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url).map_err(|e| RedisError(e.to_string()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| RedisError(e.to_string()))
}

/// Runs a Redis command with a deadline.
pub async fn timed<T>(
    timeout: Duration,
    what: &str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| RedisError(e.to_string())),
        Err(_) => Err(RedisError(format!("{what} timed out"))),
    }
}
