//! Schema-v1 lines and what reads and writes them: the schema itself, the human and JSON
//! printer, filters, Prometheus metrics, the recording writer and reader.
pub mod filter;
pub mod metrics;
pub mod output;
pub mod reader;
pub mod schema;
pub mod writer;
