//! The `tracer` subcommands: each module holds a subcommand's clap arguments and what
//! it runs; `main.rs` only parses and maps errors to exit codes.
pub mod check;
pub mod human_args;
pub mod live_args;
pub mod record;
pub mod record_args;
pub mod replay_args;
pub mod tail;
