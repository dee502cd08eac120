//! What a client command can fail with, the exit status of each (1 runtime failure, 2
//! bad input) and how it is shown.

use std::path::PathBuf;

use microseg_controller::client::ClientError;
use microseg_policy::Diagnostic;

use super::output::esc;
use super::selector::SelectorError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Files with invalid resources: every problem, then the count and what happened.
    #[error("{} error(s){closing}", diags.len())]
    Invalid {
        diags: Vec<Diagnostic>,
        /// "; nothing applied", say.
        closing: &'static str,
    },
    #[error("no *.yaml, *.yml or *.json file in what -f names; nothing applied")]
    NoFiles,
    #[error("the files name nothing to delete")]
    NothingToDelete,
    #[error("--token-file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A resource name the API would refuse, with the rule it breaks.
    #[error("{0}")]
    BadName(String),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("{0:?}: use KEY=VALUE to set a label or KEY- to remove it")]
    LabelChange(String),
    /// The URL or the TLS files (bad input), or the request on its way (runtime).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The controller refused the request (4xx) or failed it: its message and details,
    /// one per line, already escaped.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// A success whose body is not what the endpoint answers.
    #[error("the controller at {url} answered {path} with an unexpected body: {source}")]
    Answer {
        url: String,
        path: String,
        source: serde_json::Error,
    },
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Client(
                ClientError::Unreachable { .. }
                | ClientError::Handshake { .. }
                | ClientError::BadAnswer { .. },
            ) => 1,
            CommandError::Refused { status, .. } if (400..500).contains(status) => 2,
            CommandError::Refused { .. } | CommandError::Answer { .. } => 1,
            _ => 2,
        }
    }

    /// What stderr shows, escaped: `error: ...`, or every problem on a line of its own.
    pub fn report(&self) -> String {
        match self {
            CommandError::Invalid { diags, .. } => {
                // A diagnostic escapes itself.
                let mut lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
                lines.push(self.to_string());
                lines.join("\n")
            }
            CommandError::Refused { message, .. } if message.lines().count() > 1 => message.clone(),
            _ => format!("error: {}", esc(&self.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_exits_2_and_failures_1_each_saying_why() {
        let refused = |status: u16, message: &str| CommandError::Refused {
            status,
            message: message.into(),
        };
        let unreachable = CommandError::Client(ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        let bad_url = CommandError::Client(ClientError::Scheme { url: "x:1".into() });
        for (e, code, shown) in [
            (
                refused(404, "Policy \"p\" not found"),
                2,
                "error: Policy \"p\" not found",
            ),
            (refused(500, "storage: gone"), 1, "error: storage: gone"),
            (
                refused(400, "invalid input: 1 error(s)\nf:1:1: x"),
                2,
                "invalid input: 1 error(s)\nf:1:1: x",
            ),
            (
                unreachable,
                1,
                "error: cannot reach the controller at http://127.0.0.1:1: ",
            ),
            (bad_url, 2, "error: --server x:1: expected http://HOST:PORT"),
            (
                CommandError::LabelChange("a\x1b".into()),
                2,
                "error: \"a\\u{1b}\": use KEY=VALUE",
            ),
            (
                CommandError::Invalid {
                    diags: vec![Diagnostic::new("f\n.yaml", 1, 2, "bad")],
                    closing: "; nothing applied",
                },
                2,
                "f\\n.yaml:1:2: bad\n1 error(s); nothing applied",
            ),
        ] {
            assert_eq!(e.exit_code(), code, "{e}");
            assert!(
                e.report().starts_with(shown),
                "{:?} is not {shown:?}",
                e.report()
            );
        }
    }
}
