//! One module per command.

pub mod bench;
pub mod config;
pub mod consume;
pub mod demo;
pub mod diagnose;
pub mod dlq;
pub mod lag;
pub mod offsets;
pub mod produce;
pub mod run;
pub mod topics;

/// Runs `work` with `args` on a thread where blocking is fine (the Kafka client's calls
/// block), and hands `args` back with the result.
pub async fn on_blocking_thread<A, T>(
    args: A,
    work: impl FnOnce(&A) -> T + Send + 'static,
) -> anyhow::Result<(A, T)>
where
    A: Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(move || {
        let out = work(&args);
        (args, out)
    })
    .await?)
}
