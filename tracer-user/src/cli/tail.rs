//! `tracer tail`: the live view during an incident.
use std::process::ExitCode;

use crate::cli::human_args::HumanArgs;
use crate::session::live::Session;
use crate::stream::filter::{Filter, FilterArgs};
use crate::stream::metrics;
use crate::stream::output::{Format, Printer};
use crate::stream::schema::Line;
use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::live_args::LiveArgs;

/// How long a run of no-op writes must be quiet before its folded line prints.
const FOLD_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Print event schema v1 JSON lines (header, events, findings, stats) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub human: HumanArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let opts = args.live.options()?;
    let filter = Filter::new(&args.filter);
    let format = if args.json { Format::Json } else { Format::Human { color: args.human.color.enabled() } };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives while the hooks attach, or right after
        // the header, must end the session cleanly, not kill the process.
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        // Bound before the hooks attach, so a taken port fails the start, not a task.
        let metrics = metrics::start(args.live.metrics_addr).await?;
        let mut session = Session::start(&opts).await.context("cannot start tracing")?;
        let stdout = std::io::stdout();
        let mut printer = Printer::new(std::io::BufWriter::new(stdout.lock()), format);
        printer = args.human.apply(printer);
        // A folded run prints once it has been quiet this long.
        let mut fold_check = tokio::time::interval(FOLD_IDLE);
        let header = session.header().clone();
        let attached =
            header.hooks.iter().filter(|h| h.state == crate::stream::schema::HookState::Attached).count();
        if let Some(m) = &metrics {
            m.observe(&Line::Header(header.clone()));
        }
        printer.print(&Line::Header(header.clone()))?;
        printer.flush()?;
        eprintln!(
            "tracer: {attached}/{} hooks attached {}; Ctrl-C to stop",
            header.hooks.len(),
            header.mode_summary()
        );
        let mut stopping = false;
        loop {
            tokio::select! {
                line = session.next() => {
                    let Some(mut line) = line else { break };
                    // Print what is queued, then flush once: live output stays live and
                    // a storm costs one write() per batch, not one per line.
                    let mut batch = 0;
                    loop {
                        if let Some(m) = &metrics {
                            m.observe(&line);
                        }
                        if filter.matches(&line) {
                            printer.print(&line)?;
                        }
                        batch += 1;
                        if batch == 4096 {
                            break;
                        }
                        match session.try_next() {
                            Some(next) => line = next,
                            None => break,
                        }
                    }
                    printer.flush()?;
                }
                _ = fold_check.tick() => printer.flush_idle(FOLD_IDLE)?,
                _ = sigint.recv(), if !stopping => { stopping = true; session.stop(); }
                _ = sigterm.recv(), if !stopping => { stopping = true; session.stop(); }
            }
        }
        printer.finish()?;
        Ok(ExitCode::SUCCESS)
    })
}
