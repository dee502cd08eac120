//! The command line.

use std::path::PathBuf;

pub(crate) struct Args {
    pub(crate) quick: bool,
    pub(crate) rules: Vec<usize>,
    pub(crate) reps: usize,
    pub(crate) svg: Option<PathBuf>,
    pub(crate) diagnose: bool,
    pub(crate) changes: usize,
    /// A microseg binary to run instead of building one (A/B runs of two builds).
    pub(crate) bin: Option<PathBuf>,
    /// Where to keep each agent's log.
    pub(crate) agent_logs: Option<PathBuf>,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        rules: vec![0, 1000, 10000, 100000],
        reps: 0,
        svg: None,
        diagnose: false,
        changes: 0,
        bin: None,
        agent_logs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--quick" => a.quick = true,
            "--rules" => {
                a.rules = it
                    .next()
                    .ok_or("--rules needs a list")?
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .replace('_', "")
                            .parse::<usize>()
                            .map_err(|e| format!("--rules: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                if a.rules.iter().any(|&n| n > 1_000_000) {
                    return Err(
                        "--rules: at most 1,000,000 (the dummy addresses are 172.16.0.0/12)".into(),
                    );
                }
            }
            "--reps" => {
                a.reps = it
                    .next()
                    .ok_or("--reps needs N")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--diagnose" => a.diagnose = true,
            "--changes" => {
                a.changes = it
                    .next()
                    .ok_or("--changes needs N")?
                    .parse()
                    .map_err(|e| format!("--changes: {e}"))?
            }
            "--bin" => a.bin = Some(PathBuf::from(it.next().ok_or("--bin needs a path")?)),
            "--agent-logs" => {
                a.agent_logs = Some(PathBuf::from(
                    it.next().ok_or("--agent-logs needs a directory")?,
                ))
            }
            "--svg" => a.svg = Some(PathBuf::from(it.next().ok_or("--svg needs a path")?)),
            "-h" | "--help" => {
                println!("usage: microseg-compare [--quick] [--rules 0,1000,10000,100000] [--reps N] [--changes N] [--svg FILE] [--diagnose] [--bin MICROSEG] [--agent-logs DIR]");
                std::process::exit(0);
            }
            x => return Err(format!("unknown argument {x}")),
        }
    }
    if a.reps == 0 {
        a.reps = if a.quick { 2 } else { 4 };
    }
    if a.changes == 0 {
        a.changes = if a.quick { 2 } else { 3 };
    }
    Ok(a)
}
