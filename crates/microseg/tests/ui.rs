//! The web UI at `/ui/` in a real browser (headless Chromium over the DevTools protocol,
//! tests/browser): the token from `#token=` and the form, a wrong token's 401, assets
//! without a token while `/v1/*` keeps requiring it; and against a controller fed by real
//! agents in network namespaces, the service map's nodes and verdict-coloured edges, an
//! edge's flows with their policy and rule, the flow table's filters and live follow, the
//! policies page and the nodes page; the recommendations page with its Promote button
//! (`ui_pages/recommend.rs`). docs/UI.md describes the UI.
//!
//! `MICROSEG_UI_SCREENSHOTS=DIR` makes the cluster test also write DIR/ui-map.png and
//! DIR/ui-flows.png with `chromium --screenshot` (scripts/screenshots.sh).

mod browser;
mod cluster_support;
mod common;
#[path = "ui_pages/recommend.rs"]
mod recommend_page;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use browser::Browser;
use cluster_support::Cluster;
use common::{eventually, in_netns, ns_command, NetNs, BIN};
use microseg_testsupport::TempDir;

const DB: &str = "10.78.0.21";
const CACHE: &str = "10.78.0.22";
const TOKEN: &str = "cluster-test-token"; // the harness's controller token

/// web may reach db on 5432/TCP and nothing else; db takes 5432 from web only.
const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-egress}
spec:
  selector: {matchLabels: {app: web}}
  egress:
    - action: allow
      to: [{selector: {matchLabels: {app: db}}}]
      ports: [{protocol: TCP, port: 5432}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector:
    matchExpressions: [{key: app, operator: In, values: [db]}]
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      ports: [{protocol: TCP, port: 5432}]
"#;

/// One HTTP/1.1 GET from inside `ns`: the status and the whole response (status 0 and
/// the error when there is no answer).
fn http_get(ns: &str, host: &'static str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\r\n");
    in_netns(ns, move || {
        let mut out = String::new();
        let answered = TcpStream::connect(host).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(req.as_bytes())?;
            s.read_to_string(&mut out)
        });
        if let Err(e) = answered {
            return (0, e.to_string());
        }
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    })
}

/// A controller alone in a namespace of its own, on its loopback (127.0.0.1:7070), with
/// the token `right-token`; stopped, and its files removed, on drop.
struct Solo {
    child: std::process::Child,
    // Removed after the controller is stopped.
    _dir: TempDir,
    ns: NetNs,
}

impl Solo {
    /// `tls`: certificates for 127.0.0.1 and `--tls-cert`/`--tls-key` (no client CA).
    fn start(tls: bool) -> Solo {
        let ns = NetNs::new("msui");
        ns.ip(&["link", "set", "lo", "up"]);
        let dir = TempDir::new("ui-solo");
        std::fs::write(dir.join("token"), "right-token\n").unwrap();
        let mut cmd = ns_command(ns.name(), BIN);
        cmd.args(["controller", "--listen", "127.0.0.1:7070", "--token-file"])
            .arg(dir.join("token"))
            .arg("--state-dir")
            .arg(dir.join("state"));
        if tls {
            let pki = cluster_support::pki::Pki::write(&dir.join("pki"), &["127.0.0.1"]);
            cmd.arg("--tls-cert")
                .arg(&pki.server_cert)
                .arg("--tls-key")
                .arg(&pki.server_key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let solo = Solo {
            child,
            _dir: dir,
            ns,
        };
        let name = solo.ns.name().to_string();
        // Plain HTTP answers; over TLS, the port accepting connections is enough.
        eventually(Duration::from_secs(20), || {
            let (status, res) = http_get(&name, "127.0.0.1:7070", "/ui/", None);
            status == 200 || (tls && status == 0 && !res.contains("refused"))
        })
        .expect("controller up");
        solo
    }
}

impl Drop for Solo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn assets_without_the_token_and_the_api_only_with_it() {
    let solo = Solo::start(false);
    let host = "127.0.0.1:7070";
    let name = solo.ns.name().to_string();

    // The assets are public; the API is not, also when called from the UI's paths.
    for asset in [
        "/ui/",
        "/ui/app.js",
        "/ui/map.js",
        "/ui/pages.js",
        "/ui/recommend.js",
        "/ui/style.css",
    ] {
        let (status, res) = http_get(&name, host, asset, None);
        assert_eq!(status, 200, "{asset}: {res}");
        assert!(res.contains("content-security-policy: "), "{res}");
    }
    let (status, res) = http_get(&name, host, "/ui", None);
    assert_eq!(status, 308, "{res}");
    assert!(res.contains("location: /ui/"), "{res}");
    assert_eq!(http_get(&name, host, "/ui/nothing.js", None).0, 404);
    for path in [
        "/v1/nodes",
        "/v1/flows",
        "/v1/policies",
        "/v1/ui/",
        "/ui/../v1/nodes",
    ] {
        let (status, res) = http_get(&name, host, path, None);
        assert!(status == 401 || status == 404, "{path}: {res}");
        assert!(!res.contains("\"items\""), "{path} without a token: {res}");
    }
    assert_eq!(http_get(&name, host, "/v1/nodes", None).0, 401);
    assert_eq!(
        http_get(&name, host, "/v1/nodes", Some("right-token")).0,
        200
    );

    let mut b = Browser::start(&name);
    // A wrong token: the form again, with the 401's reason; nothing kept.
    b.open("http://127.0.0.1:7070/ui/#token=wrong-token");
    assert_eq!(
        b.eval("document.body.dataset.state"),
        "login",
        "{}",
        b.text()
    );
    let err = b.eval("document.getElementById('login-error').textContent");
    assert!(
        err.as_str()
            .unwrap()
            .contains("401: missing or wrong bearer token"),
        "{err}"
    );
    assert!(b.eval("sessionStorage.getItem('microseg.token')").is_null());
    assert!(!b.eval("location.href").to_string().contains("wrong-token"));

    // The right one from the fragment: kept for the tab, gone from the address bar.
    b.open("http://127.0.0.1:7070/ui/#/nodes?token=right-token");
    assert_eq!(
        b.eval("document.body.dataset.state"),
        "ready",
        "{}",
        b.text()
    );
    assert_eq!(b.eval("location.hash"), "#/nodes");
    assert_eq!(
        b.eval("sessionStorage.getItem('microseg.token')"),
        "right-token"
    );
    // A malformed window: the API's 400, shown.
    b.open("http://127.0.0.1:7070/ui/#/map?since=soon");
    let shown = b.eval("document.querySelector('main .error')?.textContent || ''");
    assert!(shown.as_str().unwrap().starts_with("400: since"), "{shown}");
    b.open("http://127.0.0.1:7070/ui/#/recommendations");
    assert_eq!(b.eval("document.body.dataset.state"), "ready");
    assert!(b.text().contains("microseg recommend"), "{}", b.text());

    // Forgotten, then given through the form.
    b.click("#logout");
    b.wait_for(
        "document.body.dataset.state === 'login'",
        Duration::from_secs(5),
    )
    .unwrap();
    b.fill("#token-input", "right-token");
    b.eval("document.body.dataset.state = 'navigating'");
    b.click("#login-form button");
    b.settle();
    assert_eq!(
        b.eval("document.body.dataset.state"),
        "ready",
        "{}",
        b.text()
    );
    assert!(b.text().contains("Policy recommendations"), "{}", b.text());
    b.open("http://127.0.0.1:7070/ui/#/nodes");
    assert!(b.text().contains("Controller revision 0"), "{}", b.text());
    map_layout_at_200_workloads(&mut b);
}

/// The map's layout for 200 workloads and 300 edges: the same whatever the input order,
/// and no two nodes closer than a row apart (docs/UI.md, "The service map").
fn map_layout_at_200_workloads(b: &mut Browser) {
    let r = b.eval(
        r#"(() => {
            let seed = 7;
            const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
            const ids = Array.from({length: 200}, (_, i) => 'w' + String(i).padStart(3, '0'));
            const edges = Array.from({length: 300}, () => ({
                src: ids[Math.floor(rnd() * 200)], dst: ids[Math.floor(rnd() * 200)]}));
            const a = MS.mapLayout(ids, edges);
            const z = MS.mapLayout([...ids].reverse(), [...edges].reverse());
            const same = ids.every(id => a.get(id).x === z.get(id).x && a.get(id).y === z.get(id).y);
            const ps = [...a.values()];
            let min = Infinity;
            for (let i = 0; i < ps.length; i++)
                for (let j = i + 1; j < ps.length; j++)
                    min = Math.min(min, Math.hypot(ps[i].x - ps[j].x, ps[i].y - ps[j].y));
            return {same, min, n: a.size,
                    width: Math.max(...ps.map(p => p.x)), height: Math.max(...ps.map(p => p.y))};
        })()"#,
    );
    assert_eq!(r["same"], true, "{r}");
    assert_eq!(r["n"], 200, "{r}");
    assert!(r["min"].as_f64().unwrap() >= 40.0, "nodes overlap: {r}");
    // Tall layers wrap into columns, deep chains into bands: a few screens at most.
    assert!(r["height"].as_f64().unwrap() <= 2400.0, "{r}");
    assert!(r["width"].as_f64().unwrap() <= 2300.0, "{r}");
}

/// Over the controller's TLS the pages work as over plain HTTP: every URL is relative.
/// (The test CA is not in Chromium's store, hence `--ignore-certificate-errors`.)
#[test]
fn the_ui_over_tls() {
    let solo = Solo::start(true);
    let mut b = Browser::start_with(solo.ns.name(), &["--ignore-certificate-errors"]);
    b.open("https://127.0.0.1:7070/ui/#/nodes?token=right-token");
    assert_eq!(
        b.eval("document.body.dataset.state"),
        "ready",
        "{}",
        b.text()
    );
    assert!(b.text().contains("Controller revision 0"), "{}", b.text());
    for page in ["map", "flows", "policies"] {
        b.open(&format!("https://127.0.0.1:7070/ui/#/{page}"));
        assert_eq!(b.eval("document.body.dataset.state"), "ready");
        assert_eq!(
            b.eval("document.querySelector('main .error') === null"),
            true,
            "{}",
            b.text()
        );
    }
    assert_eq!(b.eval("location.protocol"), "https:");
}

#[test]
fn the_map_flows_policies_and_nodes_with_real_agents() {
    let mut c = Cluster::new("ui").with_agent_args(&["--flow-active-timeout", "2s"]);
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    c.servers.push(common::tcp_echo_in(c.name("db"), 5432));
    c.servers.push(common::tcp_echo_in(c.name("cache"), 6379));
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    c.apply(POLICY);
    c.await_sync(Duration::from_secs(20), "both nodes enforce the policy");
    assert!(c.tcp_ok("web", DB, 5432), "web -> db allowed");
    assert!(!c.tcp_ok("web", CACHE, 6379), "web -> cache denied");
    assert!(!c.tcp_ok("cache", DB, 5432), "cache -> db denied");
    let (web, db, cache) = (c.name("web"), c.name("db"), c.name("cache"));
    let ui = format!("{}/ui/", cluster_support::CTL_URL);
    let mut b = Browser::start(&c.name("ctl"));

    // The map, one node per workload: the workloads, an allowed and two denied edges.
    let allow = format!("{web}->{db}");
    let (deny, deny_in) = (format!("{web}->{cache}"), format!("{cache}->{db}"));
    let edge = |e: &str, v: &str| format!(r#"[data-edge="{e}"][data-verdict="{v}"]"#);
    let wanted = [
        edge(&allow, "allow"),
        edge(&deny, "deny"),
        edge(&deny_in, "deny"),
    ];
    let all_there = format!(
        "{} && !document.querySelector('#map [data-edge][data-verdict=\"allow\"][data-edge=\"{deny}\"]')",
        wanted
            .iter()
            .map(|s| format!("document.querySelector('#map {}')", s.replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(" && ")
    );
    let map_url = format!("{ui}#/map?group=&token={TOKEN}");
    eventually(Duration::from_secs(30), || {
        b.open(&map_url);
        b.eval(&all_there) == serde_json::json!(true)
    })
    .unwrap_or_else(|e| panic!("map edges: {e}\n{}\n{}", b.text(), c.logs()));
    let mut nodes = b.attrs("#map [data-node]", "data-node");
    nodes.sort();
    let mut expected = vec![cache.clone(), db.clone(), web.clone()];
    expected.sort();
    assert_eq!(nodes, expected);
    assert_eq!(
        b.eval("location.hash"),
        "#/map?group=",
        "the token left the URL"
    );

    // A click on the allowed edge: its flows, named by policy and rule.
    b.click(&format!("#map {}", edge(&allow, "allow")));
    b.wait_for(
        "document.querySelector('#details [data-flow]')",
        Duration::from_secs(10),
    )
    .unwrap();
    let policies = b.attrs("#details [data-flow]", "data-policy");
    assert!(
        policies
            .iter()
            .all(|p| p == "web-egress" || p == "db-ingress"),
        "{policies:?}"
    );
    assert!(b
        .attrs("#details [data-flow]", "data-rule")
        .iter()
        .all(|r| r == "0"));
    // The denied one: decided by the default deny of web's egress policy.
    b.click(&format!("#map {}", edge(&deny, "deny")));
    b.wait_for(
        "document.querySelector('#details [data-flow]') && document.getElementById('edge-title').textContent.includes('cache')",
        Duration::from_secs(10),
    )
    .unwrap();
    let named = b.eval("[MS.params().get('edge'), MS.params().get('verdict')]");
    assert_eq!(
        named,
        serde_json::json!([deny, "deny"]),
        "the address names the edge"
    );
    let decided = b.attrs("#details [data-flow]", "data-policy");
    assert!(
        !decided.is_empty() && decided.iter().all(|p| p == "default-deny"),
        "{decided:?}"
    );
    assert!(b.text().contains("default"), "{}", b.text());

    // Grouped by the default label key, app.
    b.open(&format!("{ui}#/map"));
    let mut groups = b.attrs("#map [data-node]", "data-node");
    groups.sort();
    assert_eq!(groups, ["app=cache", "app=db", "app=web"]);
    assert_eq!(
        b.attrs(r#"#map [data-edge="app=web->app=cache"]"#, "data-verdict"),
        ["deny"]
    );

    // The flow table: filters narrow it; a malformed one is shown, not swallowed.
    b.open(&format!("{ui}#/flows?since=15m"));
    let rows = |b: &mut Browser| b.attrs("#flow-rows tr", "data-verdict");
    let every = rows(&mut b);
    assert!(
        every.contains(&"allow".to_string()) && every.contains(&"deny".to_string()),
        "{every:?}"
    );
    b.fill("#filter-verdict", "deny");
    b.eval("document.body.dataset.state = 'navigating'");
    b.click("#flow-apply");
    b.settle();
    let denied = rows(&mut b);
    assert!(
        !denied.is_empty() && denied.len() < every.len(),
        "{denied:?} of {every:?}"
    );
    assert!(denied.iter().all(|v| v == "deny"), "{denied:?}");
    let hash = b.eval("location.hash");
    assert!(hash.as_str().unwrap().contains("verdict=deny"), "{hash}");
    b.fill("#filter-verdict", "");
    b.fill("#filter-node", "nodeb");
    b.fill("#filter-port", "5432");
    b.eval("document.body.dataset.state = 'navigating'");
    b.click("#flow-apply");
    b.settle();
    let at_b = b.attrs("#flow-rows tr", "data-node");
    assert!(
        !at_b.is_empty() && at_b.iter().all(|n| n == "nodeb"),
        "{at_b:?}"
    );
    b.open(&format!("{ui}#/flows?protocol=XYZ"));
    let shown = b.eval("document.getElementById('flows-error')?.textContent || ''");
    assert!(
        shown.as_str().unwrap().starts_with("400: protocol"),
        "{shown}"
    );

    // Live follow: a new denied connection appears without a reload.
    b.open(&format!("{ui}#/flows?since=15m&verdict=deny&follow=1"));
    let before = rows(&mut b).len();
    assert!(!c.tcp_ok("web", CACHE, 6379));
    b.wait_for(
        &format!("document.querySelectorAll('#flow-rows tr').length > {before}"),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("follow: {e}"));

    // Policies applied through the CLI, with the workloads each selects and rule counts.
    b.open(&format!("{ui}#/policies"));
    let names = b.attrs("[data-policy]", "data-policy");
    assert_eq!(names, ["db-ingress", "web-egress"]);
    let selects = |b: &mut Browser, p: &str| {
        b.attrs(
            &format!(r#"[data-policy="{p}"] [data-workload]"#),
            "data-workload",
        )
    };
    assert_eq!(selects(&mut b, "web-egress"), [web.as_str()]);
    assert_eq!(selects(&mut b, "db-ingress"), [db.as_str()]);
    let count = b.attrs(
        r#"[data-policy="web-egress"] [data-rule="egress:0"] [data-count]"#,
        "data-count",
    );
    assert!(
        count.len() == 1 && count[0].parse::<u64>().unwrap() >= 1,
        "{count:?}"
    );

    // Nodes: revision and lag.
    b.open(&format!("{ui}#/nodes"));
    assert_eq!(b.attrs("#node-table [data-lag]", "data-lag"), ["0", "0"]);
    assert_eq!(
        b.attrs("#node-table tr[data-node]", "data-node"),
        ["nodea", "nodeb"]
    );

    if let Ok(dir) = std::env::var("MICROSEG_UI_SCREENSHOTS") {
        let dir = std::path::PathBuf::from(dir);
        let selected = format!("{ui}#/map?group=&edge={deny}&verdict=deny&token={TOKEN}");
        screenshot(&c, &selected, &dir.join("ui-map.png"));
        screenshot(
            &c,
            &format!("{ui}#/flows?since=15m&token={TOKEN}"),
            &dir.join("ui-flows.png"),
        );
    }
}

/// `chromium --screenshot` of `url` in the controller's namespace, with a profile of its
/// own (removed after).
fn screenshot(c: &Cluster, url: &str, path: &std::path::Path) {
    let profile = TempDir::new("ui-shot");
    let out = ns_command(&c.name("ctl"), "timeout")
        .args(["60", browser::CHROMIUM])
        .args(browser::base_args(profile.path()))
        .arg("--hide-scrollbars")
        .arg("--virtual-time-budget=8000")
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        path.exists(),
        "screenshot {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
