//! An agent that resyncs with the revision it holds and the controller's store id (the
//! `microseg-store` metadata) gets what changed since, also after a controller restart;
//! with another store id it gets the full state (docs/CONTROLLER.md, "The agent link").

mod common;

use common::*;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{DesiredState, SyncRequest};
use microseg_proto::STORE_HEADER;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

/// Opens `Sync` for node-a holding `revision` of `store` (None: says no store); the
/// store id the answer names, and the stream.
async fn sync(
    url: &str,
    token: &str,
    revision: u64,
    store: Option<u64>,
) -> (u64, Streaming<DesiredState>) {
    let ch = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut link = AgentLinkClient::new(ch);
    let mut req = Request::new(SyncRequest {
        node: "node-a".into(),
        revision,
        accepts_parts: true,
    });
    let m = req.metadata_mut();
    m.insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(id) = store {
        m.insert(STORE_HEADER, id.to_string().parse().unwrap());
    }
    let answer = link.sync(req).await.unwrap();
    let id = answer.metadata().get(STORE_HEADER).expect("the store id");
    (id.to_str().unwrap().parse().unwrap(), answer.into_inner())
}

async fn next(s: &mut Streaming<DesiredState>) -> DesiredState {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a message within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

fn names(d: &DesiredState) -> Vec<&str> {
    d.upserts.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn an_agent_resumes_from_its_revision_across_a_restart_and_only_in_the_same_store() {
    let state = TempDir::new("grpc-resume");
    let mut ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    assert_eq!(call(&c, "POST", "/v1/apply", &policy("a", 80)).status, 200);
    assert_eq!(call(&c, "POST", "/v1/apply", &policy("b", 81)).status, 200);
    let (url, token) = (ctl.url(), ctl.token());
    let (store, full) = ctl.rt.block_on(async {
        let (store, mut s) = sync(&url, &token, 0, None).await;
        (store, next(&mut s).await)
    });
    assert!(full.full && full.revision == 2, "{full:?}");
    assert_eq!(names(&full), ["a", "b"]);

    ctl.restart();
    let c = ctl.client();
    assert_eq!(call(&c, "POST", "/v1/apply", &policy("c", 82)).status, 200);
    let (url, token) = (ctl.url(), ctl.token());
    ctl.rt.block_on(async {
        // The store survives the restart: from revision 2, only c.
        let (again, mut s) = sync(&url, &token, 2, Some(store)).await;
        assert_eq!(again, store);
        let d = next(&mut s).await;
        assert!(!d.full && d.revision == 3, "{d:?}");
        assert_eq!(names(&d), ["c"]);
        // Holding the newest: an empty delta of that revision.
        let (_, mut s) = sync(&url, &token, 3, Some(store)).await;
        let d = next(&mut s).await;
        assert!(!d.full && d.revision == 3 && d.upserts.is_empty(), "{d:?}");
        // Another store's revision 2 is no base: the full state.
        let (_, mut s) = sync(&url, &token, 2, Some(store ^ 1)).await;
        let d = next(&mut s).await;
        assert!(d.full && d.revision == 3, "{d:?}");
        assert_eq!(names(&d), ["a", "b", "c"]);
        // A later change follows the resumed stream as a delta.
        let (_, mut resumed) = sync(&url, &token, 3, Some(store)).await;
        next(&mut resumed).await;
        let c2 = c.clone();
        tokio::task::spawn_blocking(move || call(&c2, "DELETE", "/v1/policies/a", ""))
            .await
            .unwrap();
        let d = next(&mut resumed).await;
        assert!(!d.full && d.revision == 4, "{d:?}");
        assert_eq!(d.deletes.len(), 1);
        assert_eq!(d.deletes[0].name, "a");
    });
}
