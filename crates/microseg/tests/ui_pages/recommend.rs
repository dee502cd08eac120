//! The recommendations page (docs/UI.md) in the browser, against a controller alone in
//! a namespace fed flows over the agent link: a proposed policy with its YAML, preview
//! and diff; applied in audit, its state and a Promote button that makes it enforcing;
//! a promotion the controller refuses shows its 409 on the page.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};

use super::{http_get, in_netns, ns_command, Browser, Solo, BIN};

const WORKLOADS: &str = "\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web-1, labels: {app: web}}
spec: {ips: [10.94.0.11]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db-1, labels: {app: db}}
spec: {ips: [10.94.0.21]}
";
const URL: &str = "http://127.0.0.1:7070";

/// `microseg ARGS` inside the controller's namespace, with its token; stdin from `input`.
fn cli(solo: &Solo, args: &[&str], input: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut cmd: Command = ns_command(solo.ns.name(), BIN);
    cmd.args(args)
        .args(["--server", URL, "--token-file"])
        .arg(solo._dir.join("token"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// web-1 -> db-1 TCP 5432 reported at both ends, uploaded as an agent does.
fn upload(solo: &Solo) {
    let token = std::fs::read_to_string(solo._dir.join("state/agent.token")).unwrap();
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let flows: Vec<Flow> = [("web-1", "egress"), ("db-1", "ingress")]
        .into_iter()
        .map(|(workload, direction)| Flow {
            time_us: at,
            start_us: at - 100_000,
            end_us: Some(at),
            workload: workload.into(),
            direction: direction.into(),
            src_ip: "10.94.0.11".into(),
            dst_ip: "10.94.0.21".into(),
            src_port: 40001,
            dst_port: 5432,
            protocol: 6,
            verdict: "allow".into(),
            packets: 4,
            bytes: 400,
            ..Default::default()
        })
        .collect();
    let accepted = in_netns(solo.ns.name(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ch = tonic::transport::Channel::from_static(URL)
                .connect()
                .await
                .unwrap();
            let auth = format!("Bearer {}", token.trim());
            let mut link =
                AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
                    r.metadata_mut()
                        .insert("authorization", auth.parse().unwrap());
                    Ok(r)
                });
            let batch = FlowBatch {
                node: "node-a".into(),
                flows,
                ..Default::default()
            };
            link.upload_flows(tokio_stream::iter(vec![batch]))
                .await
                .unwrap()
                .into_inner()
                .accepted
        })
    });
    assert_eq!(accepted, 2);
}

fn mode(solo: &Solo, name: &str) -> String {
    let (status, res) = http_get(
        solo.ns.name(),
        "127.0.0.1:7070",
        &format!("/v1/policies/{name}"),
        Some("right-token"),
    );
    assert_eq!(status, 200, "{res}");
    let body = res.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["spec"]["mode"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_recommendations_page_proposes_and_promotes() {
    let solo = Solo::start(false);
    let (ok, out) = cli(&solo, &["policy", "apply", "-f", "-"], Some(WORKLOADS));
    assert!(ok, "{out}");
    upload(&solo);
    let mut b = Browser::start(solo.ns.name());
    let page = "http://127.0.0.1:7070/ui/#/recommendations?since=1h&token=right-token";
    b.open(page);
    b.wait_for(
        "document.querySelector('[data-proposed=\"recommended.db\"]')",
        Duration::from_secs(15),
    )
    .unwrap();
    let card = b.eval("document.querySelector('[data-proposed=\"recommended.db\"]').innerText");
    let card = card.as_str().unwrap();
    for shown in [
        "mode: audit",
        "matchLabels: {app: web}",
        "+ ingress allow from app=web TCP/5432",
        "not applied",
    ] {
        assert!(card.contains(shown), "{shown} not in\n{card}");
    }
    assert_eq!(
        b.attrs(
            "[data-proposed=\"recommended.db\"] [data-would-deny]",
            "data-would-deny"
        ),
        ["0"]
    );
    assert_eq!(
        b.attrs(
            "[data-proposed=\"recommended.db\"] [data-allowed]",
            "data-allowed"
        ),
        ["2"]
    );

    // Applied in audit (as the CLI recommends it): its state, and a Promote button.
    let (ok, yaml) = cli(&solo, &["recommend", "--since", "1h"], None);
    assert!(ok, "{yaml}");
    let yaml: String = yaml
        .lines()
        .filter(|l| !l.starts_with("note:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (ok, out) = cli(&solo, &["policy", "apply", "-f", "-"], Some(&yaml));
    assert!(ok, "{out}");
    // A new address (the same one would load nothing new).
    b.open("http://127.0.0.1:7070/ui/#/recommendations?since=1h&group_by=app");
    assert_eq!(
        b.attrs("tr[data-applied]", "data-applied"),
        ["recommended.db", "recommended.web"]
    );
    assert_eq!(
        b.attrs("tr[data-applied]", "data-state"),
        ["learning", "learning"],
        "{}",
        b.text()
    );
    assert_eq!(
        b.attrs("[data-proposed]", "data-diff-status"),
        ["unchanged", "unchanged"]
    );

    // Promote through the button: enforce on the controller, the page drawn again.
    b.click("button[data-promote=\"recommended.db\"]");
    b.wait_for(
        "document.querySelector('#promote-done')",
        Duration::from_secs(10),
    )
    .unwrap();
    b.wait_for(
        "document.querySelector('tr[data-applied=\"recommended.db\"]')?.dataset.mode === 'enforce'",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(mode(&solo, "recommended.db"), "enforce");
    assert!(
        b.attrs("button[data-promote]", "data-promote") == ["recommended.web"],
        "{}",
        b.text()
    );

    // Promoted behind the page's back: its button now gets the controller's 409, shown.
    let (ok, out) = cli(&solo, &["policy", "promote", "recommended.web"], None);
    assert!(ok, "{out}");
    b.click("button[data-promote=\"recommended.web\"]");
    b.wait_for(
        "document.querySelector('#promote-error')",
        Duration::from_secs(10),
    )
    .unwrap();
    let err = b.eval("document.querySelector('#promote-error').textContent");
    assert!(
        err.as_str()
            .unwrap()
            .starts_with("409: Policy \"recommended.web\" is in mode enforce"),
        "{err}"
    );
    assert_eq!(
        b.eval("document.querySelector('#promote-error').getAttribute('role')"),
        "alert"
    );
}
