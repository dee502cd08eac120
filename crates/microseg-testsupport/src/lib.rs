//! What the integration tests of the microseg crates share, so each piece exists once:
//!
//! - [`NetNs`]: a named network namespace with a unique name, deleted on drop (also when
//!   the test panics), and commands and closures run inside it; [`Veth`], a pair deleted
//!   on drop; [`on_own_netns`] and [`PrivateNetns`] for namespaces private to a thread,
//!   gone with it.
//! - [`eventually`]: a bounded poll whose error says what was last seen.
//! - [`free_port`], [`TempDir`], [`Postgres`] (initdb'd in a temp dir, on a free
//!   loopback port, stopped on drop), [`ClickHouse`] (its own config and data in a temp
//!   dir, killed on drop).
//!
//! Most of it needs root (namespaces, links, PostgreSQL run as its own user).

mod clickhouse;
mod command;
mod netns;
mod poll;
mod postgres;
mod private_netns;
mod temp;

pub use clickhouse::ClickHouse;
pub use command::{ip, sh, succeeded, unique_name};
pub use netns::{in_netns, ns_command, NetNs, Veth};
pub use poll::{eventually, eventually_every, Probe, TimedOut};
pub use postgres::Postgres;
pub use private_netns::{ifindex, on_own_netns, PrivateNetns};
pub use temp::{free_port, TempDir};
