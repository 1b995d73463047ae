//! Arbitrary bytes (plain, or starting with the gzip/zstd magic) into RecordingReader:
//! it must never panic, never loop, and every line it accepts must survive a
//! serialize -> parse round trip unchanged (what `replay --json` prints, replay reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::stream::reader::{parse_line, RecordingReader};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = RecordingReader::new("fuzz", std::io::Cursor::new(data.to_vec())) else {
        return;
    };
    for item in reader.take(100_000) {
        match item {
            Ok(line) => {
                let text = serde_json::to_string(&line).expect("a parsed line serializes");
                let back = parse_line(text.as_bytes()).expect("a serialized line parses");
                assert_eq!(back, line, "round trip changed {text}");
            }
            Err(bad) => {
                let _ = bad.to_string();
            }
        }
    }
});
