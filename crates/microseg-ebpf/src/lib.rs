//! Host builds see an empty crate; the programs exist only for the BPF target (`main.rs`).
#![no_std]
