//! The web UI at `/ui/`, served from assets embedded in the binary (docs/UI.md).
