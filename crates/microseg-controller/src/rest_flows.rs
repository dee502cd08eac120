//! `GET /v1/flows` and `/v1/flows/edges`: the flow store's filters as query parameters,
//! checked by the store's own parser so that the API and the store cannot disagree
//! (docs/FLOWS.md lists them).

use crate::api_types::{EdgeList, FlowPage};
use crate::core::Core;
use crate::error::Error;
use microseg_flowstore::{Cursor, EdgeWindow, FlowFilter, FlowStore, Timestamp};
use std::sync::Arc;

/// The query of `GET /v1/flows`: each parameter once (a repeated or unknown one is
/// refused, naming it), values checked by [`FlowFilter::from_params`].
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowParams {
    since: Option<String>,
    until: Option<String>,
    verdict: Option<String>,
    direction: Option<String>,
    workload: Option<String>,
    from: Option<String>,
    to: Option<String>,
    port: Option<String>,
    protocol: Option<String>,
    policy: Option<String>,
    node: Option<String>,
    limit: Option<String>,
    /// A cursor a page returned: the records stored after it.
    after: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeParams {
    since: Option<String>,
    until: Option<String>,
}

fn pairs<'a>(fields: &[(&'a str, &'a Option<String>)]) -> Vec<(&'a str, &'a str)> {
    fields
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect()
}

/// The open store, or 503 saying why there is none.
fn store(c: &Core) -> Result<Arc<dyn FlowStore>, Error> {
    c.flows.store().map_err(|why| Error::http(503, why))
}

/// A store failure: 400 for a filter it refuses, 503 when it cannot be reached, 500
/// when it failed the statement.
fn failed(e: microseg_flowstore::Error) -> Error {
    let status = match &e {
        microseg_flowstore::Error::BadFilter(_) => 400,
        e if e.is_unavailable() => 503,
        _ => 500,
    };
    Error::http(status, crate::flow_ingest::chain(&e))
}

pub async fn flows(c: &Core, q: FlowParams) -> Result<FlowPage, Error> {
    let given = pairs(&[
        ("since", &q.since),
        ("until", &q.until),
        ("verdict", &q.verdict),
        ("direction", &q.direction),
        ("workload", &q.workload),
        ("from", &q.from),
        ("to", &q.to),
        ("port", &q.port),
        ("protocol", &q.protocol),
        ("policy", &q.policy),
        ("node", &q.node),
        ("limit", &q.limit),
    ]);
    let filter =
        FlowFilter::from_params(given, Timestamp::now()).map_err(|e| Error::bad(e.to_string()))?;
    let after = match q.after.as_deref() {
        Some(a) => Some(Cursor::parse(a).map_err(|e| Error::bad(format!("after: {}", e.message)))?),
        None => None,
    };
    let store = store(c)?;
    let page = match after {
        Some(cursor) => store.after(cursor, &filter).await,
        None => store.query(&filter).await,
    }
    .map_err(failed)?;
    Ok(FlowPage {
        items: page.records,
        cursor: page.cursor.to_string(),
    })
}

pub async fn edges(c: &Core, q: EdgeParams) -> Result<EdgeList, Error> {
    let given = pairs(&[("since", &q.since), ("until", &q.until)]);
    let window =
        EdgeWindow::from_params(given, Timestamp::now()).map_err(|e| Error::bad(e.to_string()))?;
    let items = store(c)?.edges(&window).await.map_err(failed)?;
    Ok(EdgeList { items })
}
