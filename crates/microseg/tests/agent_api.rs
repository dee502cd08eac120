//! The agent's local API against a client that never ends its request line.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::Topology;

const FLOOD: usize = 8 << 20;

/// Writes `FLOOD` bytes of `a` with no newline, then ends the request; how many bytes the
/// agent took before it closed the connection.
fn flood(mut s: UnixStream) -> usize {
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    while sent < FLOOD {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => return sent,
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    sent
}

#[test]
fn a_request_line_past_the_bound_is_refused_unread_and_the_agent_keeps_answering() {
    let mut t = Topology::new("apibound", &["web"]);
    t.write_policy("workloads.yaml", &t.workloads_yaml());
    t.start_agent();

    let s = UnixStream::connect(&t.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let s = s.try_clone().unwrap();
        std::thread::spawn(move || flood(s))
    };
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).expect("an answer");
    let answer: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("longer than 65536 bytes"), "{line}");
    // Closed with our flood unread, the socket reads as reset rather than at its end; a
    // socket left open would time out instead.
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection stayed open after the error: {e}"),
    }
    assert!(rest.is_empty(), "nothing after the error: {rest:?}");
    let sent = writer.join().unwrap();
    assert!(
        sent < FLOOD,
        "the agent stopped reading ({sent} bytes taken)"
    );

    // Still serving; a request padded to near the bound is taken whole.
    assert!(t.stats()["packets"].is_u64(), "stats after the flood");
    let mut s = UnixStream::connect(&t.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let padded = format!("{{\"cmd\":\"status\"}}{}\n", " ".repeat(60 << 10));
    s.write_all(padded.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let status: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(status["revision"].as_u64() >= Some(1), "{line}");
}
