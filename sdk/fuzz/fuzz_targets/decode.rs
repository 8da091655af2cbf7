//! Feeds arbitrary bytes to both logfmt decoders. The lenient reader must never panic and
//! never return an empty event; whatever the strict parser accepts must re-encode to a line
//! that parses back to the same pairs (when its keys hold only key characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor_sdk::logfmt::{ReadOptions, encode_pairs, parse_strict, read_line, write_key};

fuzz_target!(|data: &[u8]| {
    let (event, _) = read_line(data, &ReadOptions { max_line_bytes: 4096 });
    assert!(!event.is_empty());
    if let Ok(pairs) = parse_strict(data) {
        // Keys with characters the encoder drops (DEL, C1 controls, Unicode spaces) cannot
        // round-trip by design.
        let keys_encodable = pairs.iter().all(|p| {
            let mut k = String::new();
            write_key(&mut k, p.key);
            k == p.key
        });
        if !keys_encodable {
            return;
        }
        let line = encode_pairs(pairs.iter().map(|p| (p.key, p.value_str())));
        let again = parse_strict(line.as_bytes()).expect("encoder output parses");
        let a: Vec<_> = pairs.iter().map(|p| (p.key, p.value_str())).collect();
        let b: Vec<_> = again.iter().map(|p| (p.key, p.value_str())).collect();
        assert_eq!(a, b);
    }
});
