//! TLS and mutual TLS with real certificates (made here with rcgen): the REST client with
//! and without a client certificate, one from another CA, and the AgentLink gRPC service
//! through a tonic channel with ClientTlsConfig.

mod common;

use common::pki::Pki;
use common::*;
use microseg_controller::client::{Client, TlsFiles};
use microseg_controller::{ControllerError, Options};
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{AckRequest, DiscoveredWorkload, SyncRequest, WorkloadReport};
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn tls_opts(state: &Path, pki: &Pki, mutual: bool) -> Options {
    let mut opts = Options::new(state);
    opts.listen = "127.0.0.1:0".into();
    opts.tls_cert = Some(pki.server_cert.clone());
    opts.tls_key = Some(pki.server_key.clone());
    opts.tls_client_ca = mutual.then(|| pki.ca.clone());
    opts
}

fn client(ctl: &Ctl, ca: &Path, identity: Option<(&Path, &Path)>) -> Client {
    let files = TlsFiles {
        ca: Some(ca),
        cert: identity.map(|i| i.0),
        key: identity.map(|i| i.1),
    };
    let mut c = Client::with_tls(&ctl.url(), Some(ctl.token()), files).unwrap();
    c.timeout = Duration::from_secs(10);
    c
}

#[test]
fn rest_over_tls_needs_no_client_certificate_without_client_ca() {
    let dir = TempDir::new("tls");
    let pki = Pki::write(&dir.0.join("pki"), &["127.0.0.1", "localhost"]);
    let ctl = Ctl::start_with(tls_opts(&dir.0.join("state"), &pki, false));
    assert!(ctl.url().starts_with("https://127.0.0.1:"));
    let c = client(&ctl, &pki.ca, None);
    let r = call(&c, "POST", "/v1/apply", &policy("p1", 5432));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(names(&get(&c, "/v1/policies")), ["p1"]);
    // By host name too (the certificate names localhost).
    let port = ctl.running.as_ref().unwrap().addr.port();
    let files = TlsFiles {
        ca: Some(&pki.ca),
        ..TlsFiles::default()
    };
    let by_name = Client::with_tls(
        &format!("https://localhost:{port}"),
        Some(ctl.token()),
        files,
    )
    .unwrap();
    assert_eq!(get(&by_name, "/v1/policies").status, 200);

    // The token is still required.
    let files = TlsFiles {
        ca: Some(&pki.ca),
        ..TlsFiles::default()
    };
    let anon = Client::with_tls(&ctl.url(), None, files).unwrap();
    assert_eq!(get(&anon, "/v1/policies").status, 401);
    // A client that trusts another CA refuses the server; plain HTTP gets no answer.
    let e = client(&ctl, &pki.other_ca, None)
        .get("/v1/policies")
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let plain = Client::new(&ctl.url().replace("https", "http"), Some(ctl.token())).unwrap();
    assert!(plain.get("/v1/policies").is_err());
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    let dir = TempDir::new("mtls");
    let pki = Pki::write(&dir.0.join("pki"), &["127.0.0.1"]);
    let ctl = Ctl::start_with(tls_opts(&dir.0.join("state"), &pki, true));
    let good = client(&ctl, &pki.ca, Some((&pki.client_cert, &pki.client_key)));
    assert_eq!(
        call(&good, "POST", "/v1/apply", &policy("p1", 80)).status,
        200
    );
    assert_eq!(revision(&good), 1);

    let e = client(&ctl, &pki.ca, None).get("/v1/nodes").unwrap_err();
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
    let e = client(&ctl, &pki.ca, Some((&pki.other_cert, &pki.other_key)))
        .call(
            "POST",
            "/v1/apply",
            Some(("application/yaml", policy("p2", 81).as_bytes())),
        )
        .unwrap_err();
    // `call` fails only when no HTTP reply came back (a refusal by status would be Ok):
    // the handshake refused the certificate (UnknownCA), or broke the pipe while the body
    // was being written (or reset the connection).
    let e = e.to_string();
    assert!(
        e.contains("UnknownCA") || e.contains("Broken pipe") || e.contains("reset"),
        "{e}"
    );
    // Nothing got through.
    assert_eq!(names(&get(&good, "/v1/policies")), ["p1"]);
    // With a certificate but without the token: 401.
    let files = TlsFiles {
        ca: Some(&pki.ca),
        cert: Some(&pki.client_cert),
        key: Some(&pki.client_key),
    };
    let no_token = Client::with_tls(&ctl.url(), None, files).unwrap();
    assert_eq!(get(&no_token, "/v1/nodes").status, 401);
}

async fn channel(
    url: &str,
    pki: &Pki,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(c).unwrap(),
            std::fs::read(k).unwrap(),
        ));
    }
    Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn agent_link_over_mutual_tls() {
    let dir = TempDir::new("mtls-grpc");
    let pki = Pki::write(&dir.0.join("pki"), &["127.0.0.1"]);
    let ctl = Ctl::start_with(tls_opts(&dir.0.join("state"), &pki, true));
    let c = client(&ctl, &pki.ca, Some((&pki.client_cert, &pki.client_key)));
    assert_eq!(call(&c, "POST", "/v1/apply", &policy("p1", 80)).status, 200);
    let (url, token) = (ctl.url(), ctl.token());
    ctl.rt.block_on(async {
        let ch = channel(&url, &pki, Some((&pki.client_cert, &pki.client_key)))
            .await
            .expect("a channel with the client certificate");
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        let mut link = AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
        link.report_workloads(WorkloadReport {
            node: "node-a".into(),
            workloads: vec![DiscoveredWorkload {
                name: "web".into(),
                interface: "veth-web".into(),
                ips: vec!["10.1.0.2".into()],
                labels: [("app".to_string(), "web".to_string())].into(),
            }],
        })
        .await
        .expect("report over mutual TLS");
        let mut s = link
            .sync(SyncRequest {
                node: "node-a".into(),
                revision: 0,
                accepts_parts: true,
            })
            .await
            .expect("sync over mutual TLS")
            .into_inner();
        let full = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("the full state within 5 s")
            .unwrap()
            .unwrap();
        assert!(full.full);
        assert!(full.upserts.iter().any(|r| r.name == "p1"));
        assert!(full.upserts.iter().any(|r| r.name == "web"));
        link.ack(AckRequest {
            node: "node-a".into(),
            revision: full.revision,
            error: String::new(),
        })
        .await
        .unwrap();

        // A node's certificate does not let it speak for another node.
        let denied = link
            .sync(SyncRequest {
                node: "node-b".into(),
                revision: 0,
                accepts_parts: true,
            })
            .await
            .expect_err("node-a's certificate acting as node-b");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        let denied = link
            .ack(AckRequest {
                node: "node-b".into(),
                revision: 1,
                error: String::new(),
            })
            .await
            .expect_err("ack as another node");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);

        // Without a client certificate, or with one of another CA: no link.
        for identity in [
            None,
            Some((pki.other_cert.as_path(), pki.other_key.as_path())),
        ] {
            // With the right token, so that only the missing or foreign certificate can
            // be what refuses the call.
            let bearer: tonic::metadata::MetadataValue<_> =
                format!("Bearer {token}").parse().unwrap();
            let refused = match channel(&url, &pki, identity).await {
                Err(_) => true,
                Ok(ch) => AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
                    r.metadata_mut().insert("authorization", bearer.clone());
                    Ok(r)
                })
                .sync(SyncRequest {
                    node: "node-x".into(),
                    revision: 0,
                    accepts_parts: true,
                })
                .await
                .is_err_and(|e| e.code() != tonic::Code::Unauthenticated),
            };
            assert!(refused, "identity {identity:?} got through");
        }
    });
    let nodes = get(&c, "/v1/nodes").body;
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{nodes}");
    assert_eq!(items[0]["name"], "node-a");
    assert_eq!(items[0]["inSync"], true, "{nodes}");
}

#[test]
fn tls_flags_are_checked_before_anything_starts() {
    let dir = TempDir::new("tls-flags");
    let pki = Pki::write(&dir.0.join("pki"), &["127.0.0.1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = dir.0.join("state");
    let mut only_cert = Options::new(&state);
    only_cert.tls_cert = Some(pki.server_cert.clone());
    let mut missing = tls_opts(&state, &pki, true);
    missing.tls_key = Some(dir.0.join("nope.key"));
    let mut key_as_cert = tls_opts(&state, &pki, false);
    key_as_cert.tls_cert = Some(pki.server_key.clone());
    for (opts, want) in [
        (only_cert, "--tls-key"),
        (missing, "nope.key"),
        (key_as_cert, "no PEM certificate"),
    ] {
        match rt.block_on(microseg_controller::start(&opts)) {
            Err(ControllerError::BadInput(e)) => {
                let e = e.to_string();
                assert!(e.contains(want), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("started with {opts:?}"),
        }
    }
    assert!(!state.exists(), "nothing was created");
}

#[test]
fn postgresql_is_reached_over_tls_verified_by_the_db_ca() {
    let dir = TempDir::new("pg-tls");
    let pki = Pki::write(&dir.0.join("pki"), &["127.0.0.1"]);
    let pg = Postgres::start_tls(&pki.server_cert, &pki.server_key);
    let url = pg.database("tlsdb");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open = |ca: Option<&Path>, url: &str| {
        let mut opts = Options::new(dir.0.join("state"));
        opts.db = Some(url.to_string());
        opts.db_ca = ca.map(Path::to_path_buf);
        rt.block_on(microseg_controller::open_store(&opts))
            .map(|_| ())
    };
    // The server takes no plain connection; a server certificate of another CA is refused.
    let plain = open(None, &url).unwrap_err().to_string();
    assert!(plain.contains("PostgreSQL"), "{plain}");
    let other = open(Some(&pki.other_ca), &url).unwrap_err().to_string();
    assert!(other.contains("certificate"), "{other}");
    // sslmode=require alone checks against the system's CAs, which did not issue it.
    assert!(open(None, &format!("{url}?sslmode=require")).is_err());

    // With the right CA the controller runs on it.
    let mut opts = Options::new(dir.0.join("ctl"));
    opts.listen = "127.0.0.1:0".into();
    opts.db = Some(url);
    opts.db_ca = Some(pki.ca.clone());
    let ctl = Ctl::start_with(opts);
    let c = ctl.client();
    let r = call(&c, "POST", "/v1/apply", &policy("over-tls", 5432));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(get(&c, "/v1/policies/over-tls").status, 200);
}
