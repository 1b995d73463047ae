//! The drivers that connect the layers: a live session (ring buffer -> pipeline ->
//! correlator -> lines), a recording loop, the replay merge, and stop signals.
pub mod live;
pub mod record;
pub mod replay;
pub mod signals;
pub mod source;
