//! Throw-away servers for the flow store's tests and benchmark: a PostgreSQL and a
//! ClickHouse (microseg-testsupport's), each started once per process and stopped and
//! removed when the process exits, failed tests included.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

// Each test binary (and the benchmark) takes what it needs.
#[allow(unused_imports)]
pub use microseg_testsupport::{free_port, TempDir};
use microseg_testsupport::{unique_name, ClickHouse, Postgres};

/// Servers this process started, stopped at exit.
static SERVERS: Mutex<Vec<Server>> = Mutex::new(Vec::new());

enum Server {
    /// Stopped when dropped.
    Postgres(Postgres),
    /// Killed when dropped.
    ClickHouse(ClickHouse),
}

impl Server {
    fn stop(self) {
        match self {
            Server::Postgres(pg) => drop(pg),
            Server::ClickHouse(ch) => drop(ch),
        }
    }
}

extern "C" fn stop_servers() {
    let servers = std::mem::take(&mut *SERVERS.lock().unwrap_or_else(|p| p.into_inner()));
    for s in servers {
        s.stop();
    }
}

fn keep(server: Server) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| unsafe {
        // SAFETY: registers a plain function with no arguments, run once at exit.
        libc::atexit(stop_servers);
    });
    SERVERS.lock().unwrap().push(server);
}

/// The process's PostgreSQL: host:port.
pub fn postgres() -> &'static str {
    static PG: OnceLock<String> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Postgres::start();
        let addr = pg.addr();
        keep(Server::Postgres(pg));
        addr
    })
}

/// A new, empty database on the process's PostgreSQL; its URL.
pub async fn postgres_url() -> String {
    let addr = postgres();
    let name = unique_name("flows");
    let admin = format!("postgres://postgres@{addr}/postgres");
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    format!("postgres://postgres@{addr}/{name}")
}

/// The process's ClickHouse: host:port of its HTTP interface.
pub fn clickhouse() -> &'static str {
    static CH: OnceLock<String> = OnceLock::new();
    CH.get_or_init(|| {
        let ch = ClickHouse::start();
        let addr = ch.addr();
        keep(Server::ClickHouse(ch));
        addr
    })
}

/// A new database name on the process's ClickHouse (the store creates it); its URL.
pub fn clickhouse_url() -> String {
    format!("clickhouse://{}/{}", clickhouse(), unique_name("flows"))
}
