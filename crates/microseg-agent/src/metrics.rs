//! The agent's Prometheus metrics: `GET /metrics` on `--metrics ADDR` (docs/METRICS.md).
//! Every scrape reads the kernel's counters and the maps' fill afresh, off the async
//! workers, into a registry of its own: nothing is kept between scrapes.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use aya::maps::{Map, MapData, MapType, PerCpuArray};
use microseg_common::{names, RuleCounter, Stats};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::AgentError;
use crate::handle::{blocking, DataPlaneHandle};
use crate::owner::View;

/// The default `--metrics` address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9970";

/// The maps whose fill is reported (`microseg_map_entries{map}`): the hash maps that can
/// fill up. A fixed list, so the label is bounded.
const FILLED_MAPS: [(&str, &str); 7] = [
    ("sessions", names::SESSIONS),
    ("fragments", names::FRAGMENTS),
    ("endpoints", names::ENDPOINTS),
    ("endpoint_addrs", names::ENDPOINT_ADDRS),
    ("identities", names::IDENTITIES),
    ("host_identities", names::HOST_IDENTITIES),
    ("policy", names::POLICY),
];

/// The `--metrics` flag's value: an address, or None for `off`.
#[derive(Clone, Copy, Debug)]
pub struct Listen(pub Option<SocketAddr>);

/// Parses `--metrics`: `off`, or an IP address and port.
pub fn parse_flag(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|_| format!("`{s}` is neither `off` nor an address such as {DEFAULT_ADDR}"))
}

/// What a scrape reads besides the handle: handles of its own on pinned maps.
struct Sources {
    state: DataPlaneHandle,
    rules: PerCpuArray<MapData, RuleCounter>,
    maps: Vec<(&'static str, MapData)>,
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: DataPlaneHandle,
    maps_dir: PathBuf,
) -> Result<(), AgentError> {
    let sources = Arc::new(Sources::open(state, &maps_dir)?);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let sources = sources.clone();
            async move { scrape(sources).await }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(())
}

/// Binds `addr` and serves `/metrics` there. A failure is logged, not fatal: an agent
/// must enforce even when its metrics port is taken.
pub async fn start(addr: SocketAddr, state: DataPlaneHandle, maps_dir: PathBuf) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            return tracing::error!(%addr, error = %e, "not serving metrics: binding the address failed (--metrics ADDR or off)")
        }
    };
    match serve(listener, state, maps_dir).await {
        Ok(()) => tracing::info!(%addr, "serving Prometheus metrics at /metrics"),
        Err(e) => tracing::error!(error = %e, "not serving metrics"),
    }
}

async fn scrape(sources: Arc<Sources>) -> Response {
    let stats = sources.state.kernel_stats().await;
    let view = sources.state.view();
    let updating = sources.state.updating();
    let upload = sources
        .state
        .flows()
        .upload()
        .map(|q| (q.backlog() as i64, q.dropped()));
    let read = blocking(move || -> Result<String, String> {
        let stats = stats.map_err(|e| e.to_string())?;
        let mut m = Metrics::default();
        kernel(&mut m, &stats);
        m.gauge(
            "microseg_policy_revision",
            "The agent's policy revision in force, raised on every successful apply",
            view.revision as i64,
        );
        m.gauge(
            "microseg_policy_controller_revision",
            "Managed mode: the controller revision wholly enforced (0 standalone)",
            view.controller_revision as i64,
        );
        m.gauge(
            "microseg_policy_load_errors",
            "Errors of the last reload or update while the previous policy stays in force",
            view.errors.len() as i64,
        );
        m.gauge(
            "microseg_policy_updating",
            "1 while a policy is being compiled and applied or waits to be",
            updating as i64,
        );
        m.gauge_f64(
            "microseg_policy_compile_seconds",
            "How long the last successful update took to compile",
            view.compile_time.as_secs_f64(),
        );
        m.gauge_f64(
            "microseg_policy_apply_seconds",
            "How long the last successful update took to write into the data plane",
            view.apply_time.as_secs_f64(),
        );
        m.counter(
            "microseg_policy_update_failures",
            "Updates refused since the agent started; the previous policy stayed in force",
            view.failed_updates,
        );
        m.gauge(
            "microseg_policy_rules",
            "Rules of the policy in force",
            view.rules.len() as i64,
        );
        if let Some((backlog, dropped)) = upload {
            m.gauge(
                "microseg_flow_upload_backlog",
                "Managed mode: flow records waiting to be uploaded to the controller",
                backlog,
            );
            m.counter(
                "microseg_flow_upload_dropped",
                "Managed mode: flow records dropped for want of room in the upload buffer",
                dropped,
            );
        }
        sources.map_fill(&mut m);
        sources.rule_counters(&mut m, &view);
        m.encode()
    })
    .await;
    match read {
        Ok(text) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// The kernel's packet counters.
fn kernel(m: &mut Metrics, s: &Stats) {
    m.counter("microseg_packets", "Packets the classifiers saw", s.packets);
    m.counter("microseg_bytes", "Bytes the classifiers saw", s.bytes);
    let verdicts = [
        ("allow", s.allowed()),
        ("deny", s.denied()),
        ("log", s.logged()),
        ("audit", s.audited()),
    ];
    m.counter_family(
        "microseg_verdicts",
        "Packets by the verdict that decided them",
        verdicts.map(|(v, n)| (vec![("verdict", v.to_string())], n)),
    );
    // Spoofed packets and fragments without a first one are denied too: counted apart.
    let policy = s
        .denied()
        .saturating_sub(s.spoofed)
        .saturating_sub(s.fragments_dropped);
    let drops = [
        ("policy", policy),
        ("spoofed", s.spoofed),
        ("fragment", s.fragments_dropped),
        ("malformed", s.parse_errors),
        ("non_ip", s.non_ip_dropped),
    ];
    m.counter_family(
        "microseg_drops",
        "Packets dropped, by reason",
        drops.map(|(r, n)| (vec![("reason", r.to_string())], n)),
    );
    let more = [
        (
            "microseg_events_lost",
            "Flow events the kernel could not queue (the ring was full)",
            s.events_lost,
        ),
        (
            "microseg_session_hits",
            "Packets that found their session",
            s.session_hits,
        ),
        (
            "microseg_session_misses",
            "Packets that found no session and were judged by policy",
            s.session_misses,
        ),
        (
            "microseg_sessions_created",
            "Sessions created",
            s.sessions_created,
        ),
        (
            "microseg_sessions_closed",
            "TCP sessions removed by their connection's last packet",
            s.sessions_closed,
        ),
        (
            "microseg_rejudged",
            "Packets judged again because the policy changed since their session's verdict",
            s.rejudged,
        ),
        ("microseg_fragments", "Later IP fragments seen", s.fragments),
    ];
    for (name, help, v) in more {
        m.counter(name, help, v);
    }
}

impl Sources {
    fn open(state: DataPlaneHandle, maps_dir: &Path) -> Result<Sources, AgentError> {
        let pinned = |name: &'static str| {
            MapData::from_pin(maps_dir.join(name))
                .map_err(|source| microseg_dataplane::Error::MapOpen { name, source })
        };
        let rules = pinned(names::RULE_COUNTERS).and_then(|m| {
            Map::from_map_data(m)
                .and_then(PerCpuArray::try_from)
                .map_err(|source| microseg_dataplane::Error::MapOpen {
                    name: names::RULE_COUNTERS,
                    source,
                })
        })?;
        let mut maps = Vec::new();
        for (label, name) in FILLED_MAPS {
            maps.push((label, pinned(name)?));
        }
        Ok(Sources { state, rules, maps })
    }

    /// Entries against capacity of each map that can fill up. Hash maps keep no count:
    /// their keys are walked (a million take a fraction of a second).
    fn map_fill(&self, m: &mut Metrics) {
        let mut entries = Vec::new();
        let mut capacity = Vec::new();
        for (label, map) in &self.maps {
            let Ok(info) = map.info() else { continue };
            if !matches!(
                info.map_type(),
                Ok(MapType::Hash | MapType::LruHash | MapType::LpmTrie)
            ) {
                continue;
            }
            let n = count_keys(
                map.fd().as_fd(),
                info.key_size() as usize,
                info.max_entries(),
            );
            let labels = vec![("map", label.to_string())];
            if *label == "sessions" {
                m.gauge(
                    "microseg_sessions",
                    "Entries in the session table",
                    n as i64,
                );
                m.gauge(
                    "microseg_sessions_max",
                    "Capacity of the session table",
                    info.max_entries() as i64,
                );
            }
            entries.push((labels.clone(), n as i64));
            capacity.push((labels, info.max_entries() as i64));
        }
        m.gauge_family(
            "microseg_map_entries",
            "Entries in each kernel map that can fill up (policy maps: both slots)",
            entries,
        );
        m.gauge_family(
            "microseg_map_capacity",
            "Capacity of each kernel map that can fill up",
            capacity,
        );
    }

    /// Packets and bytes of each rule of the policy in force.
    fn rule_counters(&self, m: &mut Metrics, view: &View) {
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        for (id, rule) in view.rules.iter() {
            let Ok(per_cpu) = self.rules.get(id, 0) else {
                continue;
            };
            let (p, b) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            let labels = vec![
                ("policy", rule.policy.to_string()),
                ("direction", rule.direction.to_string()),
                ("rule", rule.index.to_string()),
                ("action", rule.action.to_string()),
            ];
            packets.push((labels.clone(), p));
            bytes.push((labels, b));
        }
        m.counter_family(
            "microseg_policy_rule_packets",
            "Packets each rule of the policy in force decided",
            packets,
        );
        m.counter_family(
            "microseg_policy_rule_bytes",
            "Bytes each rule of the policy in force decided",
            bytes,
        );
    }
}

/// Keys in a BPF map, walked with BPF_MAP_GET_NEXT_KEY. A key removed under the walk
/// makes the kernel start over, so the count is capped at the map's capacity: approximate
/// under churn, and always bounded in time.
fn count_keys(fd: BorrowedFd<'_>, key_size: usize, max_entries: u32) -> u64 {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0u64;
    let mut first = true;
    while count < u64::from(max_entries) {
        let attr = Attr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the attribute and both key buffers outlive the call; the kernel writes
        // at most key_size bytes into `next`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if rc != 0 {
            break;
        }
        first = false;
        count += 1;
        std::mem::swap(&mut key, &mut next);
    }
    count
}

/// One scrape's registry.
#[derive(Default)]
struct Metrics(Registry);

type Labels = Vec<(&'static str, String)>;

impl Metrics {
    /// A counter: the text format names it `NAME_total`.
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        self.0.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        let g = Gauge::<i64>::default();
        g.set(v);
        self.0.register(name, help, g);
    }

    fn gauge_f64(&mut self, name: &str, help: &str, v: f64) {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(v);
        self.0.register(name, help, g);
    }

    fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        items: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let f = Family::<Labels, Counter<u64>>::default();
        for (labels, v) in items {
            f.get_or_create(&labels).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        items: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        let f = Family::<Labels, Gauge<i64>>::default();
        for (labels, v) in items {
            f.get_or_create(&labels).set(v);
        }
        self.0.register(name, help, f);
    }

    fn encode(self) -> Result<String, String> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.0).map_err(|e| e.to_string())?;
        Ok(out)
    }
}
