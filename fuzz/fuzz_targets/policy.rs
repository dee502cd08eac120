//! Workload and Policy files: parse, validate, compile (see `microseg_fuzz::policy`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Policy files are read as UTF-8 text; anything else is refused before parsing.
    if let Ok(text) = std::str::from_utf8(data) {
        microseg_fuzz::policy(text);
    }
});
