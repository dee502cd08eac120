//! Node tokens: one agent token per node, so that a node can speak on the agent link for
//! itself only. A node token is `<node>.<64 hex digits>`, the digits an HMAC-SHA256 of the
//! node's name keyed with the controller's agent token. The controller checks one without
//! storing it, and replacing `agent.token` revokes every node token at once.

use ring::hmac;

/// Separates these MACs from any other use of the same key.
const CONTEXT: &[u8] = b"microseg node token v1\0";

fn key(agent_token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, agent_token.as_bytes())
}

fn message(node: &str) -> Vec<u8> {
    [CONTEXT, node.as_bytes()].concat()
}

/// The token of `node` (a valid node name) under `agent_token`.
pub fn node_token(agent_token: &str, node: &str) -> String {
    let tag = hmac::sign(&key(agent_token), &message(node));
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{node}.{hex}")
}

/// The node a presented token speaks for, when it is that node's token under
/// `agent_token` (compared in constant time).
pub fn token_node<'a>(agent_token: &str, presented: &'a str) -> Option<&'a str> {
    let (node, hex) = presented.rsplit_once('.')?;
    if node.is_empty() || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<_>>()?;
    hmac::verify(&key(agent_token), &message(node), &tag).ok()?;
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_node_and_no_other() {
        let t = node_token("secret", "node-a.example");
        assert!(t.starts_with("node-a.example."));
        assert_eq!(token_node("secret", &t), Some("node-a.example"));
        // Another node's name in front of the same MAC, or another key: refused.
        let mac = t.rsplit_once('.').unwrap().1;
        assert_eq!(token_node("secret", &format!("node-b.{mac}")), None);
        assert_eq!(token_node("other", &t), None);
        assert_eq!(token_node("secret", "node-a"), None);
        assert_eq!(
            token_node("secret", &format!("node-a.{}", &mac[..62])),
            None
        );
        assert_eq!(token_node("secret", &format!(".{mac}")), None);
    }
}
