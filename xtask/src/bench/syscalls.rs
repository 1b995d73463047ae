//! The tax on unrelated syscalls and on a whole workload (issue 12's measurements for the
//! syscall mode): `read` of 1 byte from /dev/zero, `getppid`, `write` of 1 byte to
//! /dev/null, each timed in a child loop, and a workload (`find` over /usr, then `tar` of
//! /usr/share/doc through a pipe), under none, the floor (empty programs on the same
//! syscall tracepoints) and `tracer tail --json`. The setups rotate each round; the table
//! gives medians and mins and the tracer's added cost over the floor's, from one run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{median, min, run_call, under, Call, Options, Setup};

const CALLS: [Call; 3] = [Call::Read, Call::Getppid, Call::Write];
const SETUPS: [Setup; 3] = [Setup::None, Setup::Floor, Setup::Tracer];

/// The workload: many small syscalls of all kinds (stat, getdents, open, read, write).
const WORKLOAD: &str =
    "find /usr -xdev >/dev/null 2>&1; tar -cf - /usr/share/doc 2>/dev/null | cat >/dev/null";

/// One timing of the workload, in ms.
fn workload() -> Result<f64> {
    let start = Instant::now();
    let st = Command::new("sh")
        .args(["-c", WORKLOAD])
        .stdin(Stdio::null())
        .status()
        .context("running the workload")?;
    if !st.success() {
        bail!("the workload failed: {st}");
    }
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

pub fn run(opts: &Options, tracer: &Path) -> Result<()> {
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 5 }).max(1);
    let calls = opts.writes.unwrap_or(if opts.quick { 100_000 } else { 2_000_000 }).max(1);
    // A warm-up pass of the workload: the page cache, not the first setup, pays the cold read.
    workload()?;
    eprintln!("xtask: bench: syscall tax: {rounds} round(s) x {calls} calls per syscall and setup, and the workload");
    // samples[call or workload][setup] = values
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); SETUPS.len()]; CALLS.len() + 1];
    for round in 0..rounds as usize {
        for i in 0..SETUPS.len() {
            let s = (i + round) % SETUPS.len();
            let got = under(SETUPS[s], tracer, || {
                let mut v = Vec::new();
                for call in CALLS {
                    v.push(run_call(calls, call, None)?);
                }
                v.push(workload()?);
                Ok(v)
            })
            .with_context(|| format!("under {}", SETUPS[s].name()))?;
            eprintln!("xtask: bench: round {} {:<20} {got:.1?}", round + 1, SETUPS[s].name());
            for (k, x) in got.into_iter().enumerate() {
                samples[k][s].push(x);
            }
        }
    }
    println!();
    println!(
        "syscall tax: {rounds} round(s), setups interleaved; per call: ns (median / min), added = minus none's, \
         x floor = the tracer's added over the floor's; workload: `{WORKLOAD}`, ms"
    );
    println!(
        "{:<10} {:>17} {:>17} {:>17} {:>14} {:>14} {:>12}",
        "call", "none", "floor", "tracer", "floor added", "tracer added", "x floor"
    );
    let names = CALLS.iter().map(|c| c.name()).chain(["workload"]);
    for (k, name) in names.enumerate() {
        let stat =
            |s: usize| (median(&samples[k][s]).unwrap_or(f64::NAN), min(&samples[k][s]).unwrap_or(f64::NAN));
        let (none, floor, tr) = (stat(0), stat(1), stat(2));
        let (fa, ta) = ((floor.0 - none.0, floor.1 - none.1), (tr.0 - none.0, tr.1 - none.1));
        let ratio = |t: f64, f: f64| if f > 0.0 { format!("{:.2}x", t / f) } else { "-".into() };
        println!(
            "{:<10} {:>8.1}/{:<8.1} {:>8.1}/{:<8.1} {:>8.1}/{:<8.1} {:>+6.1}/{:<+7.1} {:>+6.1}/{:<+7.1} {:>5}/{:<6}",
            name,
            none.0,
            none.1,
            floor.0,
            floor.1,
            tr.0,
            tr.1,
            fa.0,
            fa.1,
            ta.0,
            ta.1,
            ratio(ta.0, fa.0),
            ratio(ta.1, fa.1)
        );
    }
    println!(
        "note: the floor is what any syscall-tracepoint design pays (a BPF run at entry and exit of every \
         syscall, and the kernel's syscall slow path): a design on kernel functions runs no program there"
    );
    Ok(())
}
