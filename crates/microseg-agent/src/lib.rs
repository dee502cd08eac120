//! microseg-agent
