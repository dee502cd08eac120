//! The controller's Prometheus metrics at `/metrics` (docs/METRICS.md).
