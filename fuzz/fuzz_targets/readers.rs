//! The quick YAML reader against the full loader (see `microseg_fuzz::readers`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        microseg_fuzz::readers(text);
    }
});
