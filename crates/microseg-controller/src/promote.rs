//! `POST /v1/policies/{name}/promote`: an audit policy made enforcing, as one change (one
//! new revision) or, with a dry run, only checked (docs/RECOMMEND.md "Lifecycle").
//! Unknown: 404; a policy not in `mode: audit`: 409, since only the stored state stands
//! in the way, not the request.

use crate::api_types::{Applied, Change};
use crate::apply::{off_workers, Outcome};
use crate::core::Core;
use crate::error::Error;
use crate::resources::{self, POLICY};
use crate::store::{Snapshot, Write};
use microseg_policy::{Mode, Resource};

/// The write that promotes `name` in `snap`, or why it cannot be promoted.
fn promotion(snap: &Snapshot, name: &str) -> Result<Write, Error> {
    let row = snap
        .get(POLICY, name)
        .ok_or_else(|| Error::NotFound(format!("Policy \"{name}\" not found")))?;
    let Resource::Policy(p) = row.resource()? else {
        return Err(Error::NotFound(format!("Policy \"{name}\" not found")));
    };
    if p.mode != Mode::Audit {
        return Err(Error::Conflict(format!(
            "Policy \"{name}\" is in mode {}, not audit: only an audit policy can be promoted",
            p.mode
        )));
    }
    let mut enforcing = (**p).clone();
    enforcing.mode = Mode::Enforce;
    Ok(Write::Put {
        kind: POLICY.into(),
        name: name.to_string(),
        json: resources::policy_json(&enforcing).to_string(),
        node: String::new(),
        reported: None,
    })
}

impl Core {
    pub async fn promote(&self, name: String, dry_run: bool) -> Result<Outcome<Applied>, Error> {
        let store = self.store.clone();
        let item = Applied {
            action: Change::Configured,
            kind: POLICY.into(),
            name: name.clone(),
        };
        let revision = off_workers(move |rt| {
            if dry_run {
                let (revision, rows) = rt.block_on(store.full())?;
                let snap = Snapshot {
                    revision,
                    rows,
                    overlays: Default::default(),
                };
                return promotion(&snap, &name).map(|_| revision);
            }
            let tx = Box::new(move |snap: &Snapshot| Ok(vec![promotion(snap, &name)?]));
            rt.block_on(store.transact(tx))
        })
        .await?;
        let revision = if dry_run {
            revision
        } else {
            tracing::info!(policy = %crate::error::printable(&item.name), revision, "promoted to enforce");
            self.published(revision)
        };
        Ok(Outcome {
            revision,
            items: vec![item],
        })
    }
}
