//! `cargo xtask bench --only vm`: the kernel-function mode, counted on a real Debian
//! kernel (6.12, systemd as PID 1 under qemu: `cargo xtask vm`), since this machine's
//! kernel refuses BPF trampolines. Under qemu's software emulation an emulated syscall
//! entry dwarfs a BPF run, so timings say little there: this counts instead. One boot
//! runs, in the syscall mode and then the kernel-function mode:
//! - the tracer's BPF program runs (`kernel.bpf_stats_enabled`, each program's fdinfo
//!   `run_cnt`) per unrelated `getppid`, `read` and `write`, and over a `find | tar`
//!   workload;
//! - a storm of 20,000 cgroup writes from 4 processes: captured and lost.
//!
//! Both are VM tests (`tests/tests/vm_incidents.rs`), which also assert the targets;
//! this section runs them and tabulates the lines they print.
use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};

const KERNEL: &str = "6.12";

pub fn run() -> Result<()> {
    let opts = crate::vm::Options {
        kernels: vec![KERNEL.into()],
        only: vec!["incidents".into()],
        test_args: vec![
            "real_node_unrelated_syscalls".into(),
            "real_node_cgroup_write_storm".into(),
            "--nocapture".into(),
        ],
        timeout: 1500,
        verbose: false,
    };
    let rc = crate::vm::run_vm(&opts)?;
    let log = crate::util::target_dir().join("vm").join(KERNEL).join("serial.log");
    let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    print_table(&text);
    if rc != 0 {
        bail!("the VM tests failed (see {})", log.display());
    }
    Ok(())
}

/// `@@runs mode=M op=O calls=N runs=R idle=I per_call=P` lines, and the storm's
/// `M mode: W writes in S s (X/s), C captured, lost L` lines.
fn print_table(log: &str) {
    let kernel =
        log.lines().find_map(|l| l.split("kernel=").nth(1)).and_then(|r| r.split_whitespace().next());
    println!("\n## vm: BPF program runs, counted (Debian {}, qemu TCG)", kernel.unwrap_or(KERNEL));
    let mut rows: BTreeMap<(usize, String), BTreeMap<String, String>> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.split("@@runs ").nth(1) else { continue };
        let f: BTreeMap<&str, &str> = rest.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
        let (Some(mode), Some(op)) = (f.get("mode"), f.get("op")) else { continue };
        let order = ["getppid", "read", "write", "workload"].iter().position(|o| o == op).unwrap_or(9);
        let cell = if *op == "workload" {
            format!("{} runs", f.get("runs").unwrap_or(&"?"))
        } else {
            format!("{} per call", f.get("per_call").unwrap_or(&"?"))
        };
        rows.entry((order, op.to_string())).or_default().insert(mode.to_string(), cell);
    }
    println!("{:<10} {:>24} {:>24}", "op", "syscall mode", "kfunc mode");
    for ((_, op), cells) in &rows {
        let get = |m: &str| cells.get(m).cloned().unwrap_or_else(|| "-".into());
        println!("{op:<10} {:>24} {:>24}", get("syscall"), get("kfunc"));
    }
    println!("(getppid, read, write: 200,000 calls each, the interpreter's start-up subtracted;");
    println!(" workload: find /usr/share | head -n 3000 | tar -cf - -T - | wc -c, all its runs)");
    for line in log.lines().filter(|l| l.contains(" mode: ") && l.contains(" captured, lost ")) {
        let line = line.split("] ").last().unwrap_or(line);
        println!("storm, {line}");
    }
}
