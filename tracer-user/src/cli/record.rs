//! `tracer record` and `tracer replay`: the postmortem pair.
use std::process::ExitCode;

use crate::cli::record_args::RecordArgs;
use crate::session::live::Session;
use crate::session::record::run_record;
use crate::session::replay::{run_replay, ReplayArgs};
use crate::session::signals::Signals;
use crate::stream::metrics::{self, Observed};
use anyhow::Context;

use crate::cli::live_args::LiveArgs;

#[derive(clap::Args, Debug)]
pub struct RecordCmd {
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

pub fn record(cmd: RecordCmd) -> anyhow::Result<ExitCode> {
    let opts = cmd.live.options()?;
    check_writable(&cmd.record.output)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let signals = Signals::install()?;
        // Bound before the hooks attach, so a taken port fails the start.
        let metrics = metrics::start(cmd.live.metrics_addr).await?;
        let session = Session::start(&opts).await.context("cannot start tracing")?;
        let attached = session
            .header()
            .hooks
            .iter()
            .filter(|h| h.state == crate::stream::schema::HookState::Attached)
            .count();
        eprintln!(
            "tracer: {attached}/{} hooks attached {}; recording to {} (Ctrl-C or SIGTERM to stop)",
            session.header().hooks.len(),
            session.header().mode_summary(),
            cmd.record.output.display()
        );
        let summary = match metrics {
            Some(m) => run_record(cmd.record, Observed::new(session, m), signals).await?,
            None => run_record(cmd.record, session, signals).await?,
        };
        eprintln!(
            "tracer: recorded {} events, {} findings in {} file(s), {} bytes to {}",
            summary.events, summary.findings, summary.parts, summary.bytes, summary.path
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let summary = run_replay(&args, std::io::BufWriter::new(stdout.lock()))?;
    // Bad lines inside a recording were skipped and reported (--strict stops at the
    // first). An input that is no recording at all is a mistake the caller must see.
    match summary.not_recordings.len() {
        0 => Ok(ExitCode::SUCCESS),
        n if n == summary.files.len() => anyhow::bail!(
            "{} (a recording starts with a schema-v1 header line, as `tracer record -o FILE` writes it)",
            if n == 1 {
                format!("{} is not a tracer recording", summary.not_recordings[0])
            } else {
                format!("none of the {n} inputs is a tracer recording")
            }
        ),
        n => {
            eprintln!(
                "tracer: error: {n} of {} inputs are not tracer recordings and were skipped: {}",
                summary.files.len(),
                summary.not_recordings.join(", ")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Fails before the hooks attach (which takes a second) when the output cannot be
/// created: the same error the writer would give, sooner. The writer truncates it.
fn check_writable(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str() == "-" {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
        .with_context(|| format!("cannot create recording {}", path.display()))
}
