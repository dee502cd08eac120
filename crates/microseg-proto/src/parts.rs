//! One revision of desired state in several messages (`DesiredState.more`): the
//! controller splits, the agent joins.

use crate::v1::DesiredState;
use prost::encoding::message;

/// Room for a part's own fields (revision, full, more) besides its resources.
const PART_OVERHEAD: usize = 32;

/// Splits `state` into parts whose encoding stays within `limit` bytes, each holding
/// whole resources (one larger than `limit` goes alone). Every part carries the revision;
/// only the first keeps `full`; all but the last have `more` set. A state within the
/// limit is returned as it is.
pub fn split(state: DesiredState, limit: usize) -> Vec<DesiredState> {
    if prost::Message::encoded_len(&state) <= limit {
        return vec![state];
    }
    let DesiredState {
        revision,
        full,
        upserts,
        deletes,
        more: _,
    } = state;
    let empty = |first: bool| DesiredState {
        revision,
        full: full && first,
        ..Default::default()
    };
    let mut parts = vec![empty(true)];
    let mut size = PART_OVERHEAD;
    let mut room = |cost: usize, parts: &mut Vec<DesiredState>| {
        let last = parts.last().expect("one part at least");
        let holds_any = !last.upserts.is_empty() || !last.deletes.is_empty();
        if holds_any && size + cost > limit {
            parts.push(empty(false));
            size = PART_OVERHEAD;
        }
        size += cost;
    };
    for r in upserts {
        room(message::encoded_len(3, &r), &mut parts);
        parts.last_mut().expect("one part").upserts.push(r);
    }
    for r in deletes {
        room(message::encoded_len(4, &r), &mut parts);
        parts.last_mut().expect("one part").deletes.push(r);
    }
    let last = parts.len() - 1;
    for p in &mut parts[..last] {
        p.more = true;
    }
    parts
}

/// A part that cannot continue the revision being collected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "protocol error: a part of revision {revision}{} arrived while revision {incomplete} was incomplete",
    if *.full { " (full)" } else { "" }
)]
pub struct PartOutOfPlace {
    pub revision: u64,
    pub full: bool,
    pub incomplete: u64,
}

/// Collects the parts of one revision until its last one.
#[derive(Default)]
pub struct Joiner {
    pending: Option<DesiredState>,
}

impl Joiner {
    /// The whole revision once `part` completes it; None while more parts are due. A part
    /// of another revision, or a `full` one, while a revision is incomplete is a protocol
    /// error: the caller drops the stream and resyncs.
    pub fn push(&mut self, part: DesiredState) -> Result<Option<DesiredState>, PartOutOfPlace> {
        let whole = match self.pending.take() {
            None => part,
            Some(mut pending) => {
                if part.revision != pending.revision || part.full {
                    return Err(PartOutOfPlace {
                        revision: part.revision,
                        full: part.full,
                        incomplete: pending.revision,
                    });
                }
                pending.upserts.extend(part.upserts);
                pending.deletes.extend(part.deletes);
                pending.more = part.more;
                pending
            }
        };
        if whole.more {
            self.pending = Some(whole);
            return Ok(None);
        }
        Ok(Some(whole))
    }

    /// The revision being collected, if a part of it arrived.
    pub fn incomplete(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Resource, ResourceRef};
    use prost::Message;

    fn resource(i: usize, bytes: usize) -> Resource {
        Resource {
            kind: "Policy".into(),
            name: format!("p{i}"),
            json: "x".repeat(bytes),
        }
    }

    fn state(full: bool, sizes: &[usize], deletes: usize) -> DesiredState {
        DesiredState {
            revision: 7,
            full,
            upserts: sizes
                .iter()
                .enumerate()
                .map(|(i, b)| resource(i, *b))
                .collect(),
            deletes: (0..deletes)
                .map(|i| ResourceRef {
                    kind: "Workload".into(),
                    name: format!("w{i}"),
                })
                .collect(),
            more: false,
        }
    }

    #[test]
    fn a_small_state_is_one_message() {
        let s = state(true, &[10, 20], 1);
        assert_eq!(split(s.clone(), 1 << 20), vec![s]);
    }

    #[test]
    fn parts_stay_within_the_limit_and_join_to_the_state() {
        let limit = 10_000;
        let mut sizes = vec![300; 100];
        sizes.insert(40, 25_000); // larger than a part: alone
        let s = state(true, &sizes, 500);
        let parts = split(s.clone(), limit);
        assert!(parts.len() > 5, "{}", parts.len());
        assert!(parts[0].full && parts[1..].iter().all(|p| !p.full));
        assert!(parts.iter().all(|p| p.revision == 7));
        let last = parts.len() - 1;
        assert!(parts[..last].iter().all(|p| p.more) && !parts[last].more);
        for p in &parts {
            let alone = p.upserts.len() + p.deletes.len() == 1;
            assert!(alone || p.encoded_len() <= limit, "{}", p.encoded_len());
        }
        let mut j = Joiner::default();
        let mut whole = None;
        for p in parts {
            assert!(whole.is_none());
            whole = j.push(p).unwrap();
        }
        assert_eq!(whole, Some(s));
        assert_eq!(j.incomplete(), None);
    }

    #[test]
    fn a_part_out_of_place_is_a_protocol_error() {
        let parts = split(state(false, &[600; 10], 0), 1_000);
        let mut j = Joiner::default();
        assert_eq!(j.push(parts[0].clone()), Ok(None));
        assert_eq!(j.incomplete(), Some(7));
        let mut other = parts[1].clone();
        other.revision = 8;
        let e = j.push(other).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol error: a part of revision 8 arrived while revision 7 was incomplete"
        );
        // A full part cannot continue a revision either.
        let mut j = Joiner::default();
        j.push(parts[0].clone()).unwrap();
        let mut full = parts[1].clone();
        full.full = true;
        let want = PartOutOfPlace {
            revision: 7,
            full: true,
            incomplete: 7,
        };
        assert_eq!(j.push(full), Err(want));
    }
}
