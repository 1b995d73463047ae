//! Arbitrary bytes as a ring-buffer record: decode must return a value or a typed
//! error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tracer_user::pipeline::decode::decode(data);
});
