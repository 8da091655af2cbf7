//! Parses arbitrary UTF-8: must never panic, errors must point inside the input, and whatever
//! parses must print to text that parses back to the same AST.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    match spoor_query::parse_query(input) {
        Ok(query) => {
            let printed = query.to_string();
            let reparsed = spoor_query::parse_query(&printed);
            assert_eq!(reparsed.as_ref().ok(), Some(&query), "printed {printed:?}");
        }
        Err(e) => {
            assert!(e.position <= input.len());
            let _ = e.render(input);
        }
    }
});
