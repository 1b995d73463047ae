//! `tracer record -o FILE`: the loop that takes lines from a [`LineSource`] through the
//! filter into a [`RecordWriter`] until the source ends, a stop signal comes or
//! `--duration` passes (the writer's guarantees are in [`crate::stream::writer`]).

use std::time::Duration;

use crate::cli::record_args::RecordArgs;
use crate::session::signals::{Signals, StopReason, StopTrigger};
pub use crate::session::source::LineSource;
use crate::stream::filter::Filter;
use crate::stream::writer::{RecordSummary, RecordWriter, WriterOptions};

/// `tracer record`: write everything `source` yields through the filter until it ends,
/// stopping it on SIGINT/SIGTERM or after `--duration`, then fsync.
///
/// `signals` must be installed before the capture starts ([`Signals::install`]): a
/// SIGTERM that arrives while the hooks attach then ends the recording cleanly instead
/// of killing the process.
pub async fn run_record<S: LineSource>(
    args: RecordArgs,
    source: S,
    signals: Signals,
) -> anyhow::Result<RecordSummary> {
    let opts =
        WriterOptions { rotate_size: args.rotate_size, max_files: args.max_files, ..Default::default() };
    let writer = RecordWriter::create(&args.output, source.header(), opts)?;
    let summary = record_loop(writer, &Filter::new(&args.filter), source, args.duration, signals).await?;
    Ok(summary)
}

/// The recording loop, with the stop trigger passed in (signals in `run_record`).
pub async fn record_loop<S: LineSource, T: StopTrigger>(
    mut writer: RecordWriter,
    filter: &Filter,
    mut source: S,
    duration: Option<Duration>,
    mut stop: T,
) -> anyhow::Result<RecordSummary> {
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(writer.opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<StopReason> = None;
    loop {
        tokio::select! {
            line = source.next() => {
                let Some(line) = line else { break };
                if filter.matches(&line) {
                    if let Err(e) = writer.write_line(&line) {
                        source.stop();
                        return Err(e.into());
                    }
                }
            }
            _ = stop.fired() => {
                if stopping.is_some() {
                    tracing::warn!("second stop signal: not waiting for the rest of the buffered events");
                    break;
                }
                stopping = Some(StopReason::Signal);
                source.stop();
            }
            _ = &mut deadline, if duration.is_some() && stopping.is_none() => {
                stopping = Some(StopReason::Duration);
                source.stop();
            }
            _ = tick.tick() => writer.flush_if_due()?,
        }
    }
    Ok(writer.close()?)
}

#[cfg(test)]
pub(crate) mod tests;
