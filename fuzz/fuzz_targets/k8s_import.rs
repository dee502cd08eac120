//! Kubernetes NetworkPolicy files through the import (see `microseg_fuzz::k8s_import`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        microseg_fuzz::k8s_import(text);
    }
});
