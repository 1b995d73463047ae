//! The line source a recording or a tail reads from: the live pipeline, or a fake in
//! tests.

use crate::stream::schema::{HeaderLine, Line};

/// Where `record` gets its lines: the live pipeline (`live::Session`), or a fake in tests.
pub trait LineSource {
    /// The header line: first line of the recording and of every rotated part.
    fn header(&self) -> &HeaderLine;
    /// Next event, finding or stats line; `None` once [`stop`](LineSource::stop) has
    /// finished draining. Must be cancel-safe (like `mpsc::Receiver::recv`): it is polled
    /// in a `select!` with signals and timers, and a cancelled call must not lose a line.
    #[allow(async_fn_in_trait)]
    async fn next(&mut self) -> Option<Line>;
    /// Begin shutdown: stop reading new records, drain what is buffered, then a final
    /// stats line, then `None`.
    fn stop(&mut self);
}
