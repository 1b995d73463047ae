//! The arguments of `tracer record` and their value parsers.

use std::path::PathBuf;
use std::time::Duration;

use crate::stream::filter::FilterArgs;

/// Arguments of `tracer record`.
#[derive(clap::Args, Clone, Debug)]
pub struct RecordArgs {
    /// File to write (`-` for stdout). An existing file is truncated.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// Stop after this long (e.g. `90s`, `10m`, `1h30m`), draining what is buffered.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Start a new part when the file would exceed this size (e.g. `100M`, `1G`; K/M/G
    /// are powers of 1024). Parts: FILE (newest), FILE.1, FILE.2, ...
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub rotate_size: Option<u64>,

    /// With --rotate-size: keep at most this many parts, FILE included; the oldest is
    /// deleted.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_files: u32,

    #[command(flatten)]
    pub filter: FilterArgs,
    // The live pipeline's options (hooks, ring buffer size, ...) are flattened here by
    // main.rs / live.rs: `#[command(flatten)] pub live: live::LiveArgs`.
}

/// `90s`, `10m`, `1h30m`, `500ms`, `2d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?} (examples: 30s, 10m, 1h30m)"
            ));
        }
        let n: u64 =
            rest[..digits].parse().map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n.saturating_mul(60)),
            "h" | "hr" | "hours" => Duration::from_secs(n.saturating_mul(3600)),
            "d" | "days" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h, d)")),
        };
        total = total.saturating_add(d);
    }
    if total.is_zero() {
        return Err(format!("invalid duration {s:?}: must be more than zero"));
    }
    Ok(total)
}

/// `100M`, `1G`, `512K`, `4096`; K/M/G/T are powers of 1024 (`MB`, `MiB` accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(format!("invalid size {s:?} (examples: 100M, 1G)"));
    }
    let n: u64 = t[..digits].parse().map_err(|_| format!("invalid size {s:?}: too large"))?;
    let shift = match t[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        u => return Err(format!("invalid size {s:?}: unknown unit {u:?} (use K, M, G)")),
    };
    let v = n.checked_mul(1u64 << shift).ok_or_else(|| format!("invalid size {s:?}: too large"))?;
    if v < 4096 {
        return Err(format!("rotate size {s:?} is too small (at least 4K)"));
    }
    Ok(v)
}
