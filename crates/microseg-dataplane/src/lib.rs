//! microseg-dataplane
