//! The arguments of `tracer replay`.

use std::path::PathBuf;

use crate::cli::human_args::HumanArgs;
use crate::stream::filter::FilterArgs;
use crate::stream::schema::Timestamp;

/// Arguments of `tracer replay`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ReplayArgs {
    /// Recordings (plain, gzip or zstd), merged into one timeline by time; `-` or none
    /// reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Print schema-v1 JSON lines instead of the human timeline (summary on stderr).
    #[arg(long)]
    pub json: bool,

    /// Stop at the first bad line with an error, instead of skipping and counting it.
    #[arg(long)]
    pub strict: bool,

    /// Show only lines at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z). The
    /// correlator still sees everything before it.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<Timestamp>,

    /// Show only lines at or before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<Timestamp>,

    #[command(flatten)]
    pub human: HumanArgs,

    #[command(flatten)]
    pub filter: FilterArgs,
}

/// clap value parser for `--since`/`--until`.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s.trim())
        .ok_or_else(|| format!("invalid time {s:?}: use RFC 3339, e.g. 2024-05-01T12:00:00Z"))
}
