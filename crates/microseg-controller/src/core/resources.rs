//! The stored resources as the API shows them and as each agent receives them, and the
//! label changes made through the API.

use super::Core;
use crate::api_types::Stored;
use crate::error::Error;
use crate::resources::{self, WORKLOAD};
use crate::store::{Row, Snapshot, Write};
use microseg_policy::{check_label_key, check_label_value, Resource};
use std::collections::BTreeMap;

/// A stored row as the API shows it: the resource with the revision that last changed
/// it and, for a discovered workload, its node.
fn decorate(r: &Row) -> Result<Stored<Resource>, Error> {
    Ok(Stored {
        resource: r.resource()?.clone(),
        revision: r.revision,
        node: (!r.node.is_empty()).then(|| r.node.clone()),
    })
}

/// A discovered workload's labels: those its agent reported, changed by the API's
/// (`Some` sets, `None` removes), which win.
pub(super) fn effective_labels(
    reported: &BTreeMap<String, String>,
    overlay: Option<&BTreeMap<String, Option<String>>>,
) -> BTreeMap<String, String> {
    let mut l = reported.clone();
    for (k, v) in overlay.into_iter().flatten() {
        match v {
            Some(v) => l.insert(k.clone(), v.clone()),
            None => l.remove(k),
        };
    }
    l
}

impl Core {
    /// Merges labels into a workload: `Some(v)` sets, `None` removes. On a discovered
    /// workload the change is kept apart from what the agent reports and wins over it.
    pub async fn label(
        &self,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
    ) -> Result<(u64, BTreeMap<String, String>), Error> {
        let mut problems = Vec::new();
        for (k, v) in &changes {
            problems.extend(check_label_key(k));
            if let Some(v) = v {
                problems.extend(check_label_value(v));
            }
        }
        if !problems.is_empty() {
            return Err(Error::invalid(problems));
        }
        if changes.is_empty() {
            return Err(Error::bad("no labels given"));
        }
        let mut result = BTreeMap::new();
        let out = &mut result;
        let rev = self
            .store
            .transact(Box::new(move |snap: &Snapshot| {
                let row = snap
                    .get(WORKLOAD, name)
                    .ok_or_else(|| Error::NotFound(format!("Workload \"{name}\" not found")))?;
                let mut workload = row.workload()?.clone();
                let mut writes = Vec::new();
                let labels = if row.node.is_empty() {
                    effective_labels(&workload.labels, Some(&changes))
                } else {
                    let mut overlay = snap.overlays.get(name).cloned().unwrap_or_default();
                    overlay.extend(changes.clone());
                    let reported = row.reported.clone().unwrap_or_default();
                    let l = effective_labels(&reported.labels, Some(&overlay));
                    writes.push(Write::Overlay {
                        name: name.to_string(),
                        labels: overlay,
                    });
                    l
                };
                workload.labels = labels.clone();
                let json = resources::workload_json(&workload).to_string();
                if json != row.json {
                    writes.push(Write::Put {
                        kind: WORKLOAD.into(),
                        name: name.to_string(),
                        json,
                        node: row.node.clone(),
                        reported: row.reported.clone(),
                    });
                }
                *out = labels;
                Ok(writes)
            }))
            .await?;
        Ok((self.published(rev), result))
    }

    pub async fn list(&self, kind: &str) -> Result<(u64, Vec<Stored<Resource>>), Error> {
        let rev = self.store.revision().await?;
        let rows = self.store.list(Some(kind)).await?;
        Ok((rev, rows.iter().map(decorate).collect::<Result<_, _>>()?))
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<Stored<Resource>, Error> {
        let rows = self.store.list(Some(kind)).await?;
        rows.iter()
            .find(|r| r.name == name)
            .map(decorate)
            .ok_or_else(|| Error::NotFound(format!("{kind} \"{name}\" not found")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_win_over_reported_labels() {
        let rep: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let ov: BTreeMap<String, Option<String>> =
            [("a".into(), Some("9".into())), ("b".into(), None)].into();
        let l = effective_labels(&rep, Some(&ov));
        assert_eq!(l, [("a".to_string(), "9".to_string())].into());
    }
}
