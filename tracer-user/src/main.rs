//! The `tracer` command: parses the command line and hands over to one command module.
//! Errors become a message on stderr and a non-zero exit; a closed stdout (`| head`) is
//! a normal end.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tracer_user::cli;

/// tracer: who changed the node under my pods?
///
/// Watches, in the kernel, every write to a cgroup file, every cgroup mkdir and rmdir,
/// every net sysctl write (rp_filter above all), every rtnetlink request that deletes a
/// route, rule, address or link or sets a link down or sets rp_filter, and the signals
/// that end processes. Names the process behind each change (systemd, kubelet, runc,
/// systemd-networkd, systemd-sysctl, ...) and flags the known incident patterns with
/// the evidence and the fix.
///
/// Needs root, or CAP_BPF + CAP_PERFMON (+ CAP_NET_ADMIN for the sysctl hook), and a
/// kernel with BTF (5.8+). Start with `tracer check`.
#[derive(Parser, Debug)]
#[command(name = "tracer", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every change as it happens, actor first; findings inline with their fix.
    ///
    /// Examples:
    ///   tracer tail                                  # everything, human-readable
    ///   tracer tail --json                           # schema-v1 JSON lines
    ///   tracer tail --kind cgroup_write --cgroup /kubepods.slice
    ///   tracer tail --actor systemd-networkd --dev 'lxc*'
    ///   tracer tail --findings-only
    #[command(verbatim_doc_comment)]
    Tail(cli::tail::TailArgs),
    /// Report BTF, privileges, cgroup2 and each hook: attached, or why not.
    ///
    /// Exits non-zero when no hook can run.
    Check(cli::check::CheckArgs),
    /// Record schema-v1 JSON lines to a file for the postmortem (header, events,
    /// findings, periodic stats). SIGINT/SIGTERM end it with every captured line written.
    ///
    /// Examples:
    ///   tracer record -o /var/tmp/node.jsonl --duration 2h
    ///   tracer record -o node.jsonl --rotate-size 100M --max-files 5 --kind cgroup_write
    ///   tracer record -o - | gzip > node.jsonl.gz
    #[command(verbatim_doc_comment)]
    Record(cli::record::RecordCmd),
    /// Re-run the correlator over recordings: timeline, findings with evidence, actors.
    ///
    /// Reads plain, gzip or zstd files, or stdin (`-`); several files (rotated parts,
    /// several nodes) merge into one timeline ordered by time.
    ///
    /// Examples:
    ///   tracer replay node.jsonl
    ///   tracer replay node.jsonl* --findings-only
    ///   tracer replay a.jsonl.gz b.jsonl.zst --since 2026-11-24T07:00:00Z --json
    #[command(verbatim_doc_comment)]
    Replay(tracer_user::cli::replay_args::ReplayArgs),
    /// Attach empty programs on sys_enter/sys_exit until SIGTERM (benchmark floor).
    #[command(hide = true)]
    BenchFloor,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRACER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tail(args) => cli::tail::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Record(args) => cli::record::record(args),
        Command::Replay(args) => cli::record::replay(args),
        Command::BenchFloor => bench_floor(),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once: many messages already quote their source.
fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn bench_floor() -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        // Handlers before attaching (see cmd_tail).
        let mut signals = tracer_user::session::signals::Signals::install()?;
        let _ebpf = tracer_user::kernel::loader::load_floor()?;
        eprintln!("tracer: floor programs attached on sys_enter and sys_exit");
        tracer_user::session::signals::StopTrigger::fired(&mut signals).await;
        Ok(ExitCode::SUCCESS)
    })
}
