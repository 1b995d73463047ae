//! How a live session or a recording is asked to stop: SIGINT/SIGTERM (installed before
//! the hooks attach, so an early SIGTERM still ends cleanly), or a channel in tests.

use anyhow::Context as _;

/// Why the recording loop should stop reading new records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Signal,
    Duration,
}

/// A stop trigger that can fire more than once (a second signal ends the draining).
pub trait StopTrigger {
    #[allow(async_fn_in_trait)]
    async fn fired(&mut self);
}

/// SIGINT or SIGTERM.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the SIGINT and SIGTERM handlers (inside a tokio runtime).
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }
}

impl StopTrigger for Signals {
    async fn fired(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// A trigger fed by a channel (tests, or callers with their own signal handling).
impl StopTrigger for tokio::sync::mpsc::Receiver<()> {
    async fn fired(&mut self) {
        if self.recv().await.is_none() {
            std::future::pending::<()>().await
        }
    }
}
