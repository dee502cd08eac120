//! The command line.

pub(crate) struct Args {
    pub(crate) repeat: u32,
    pub(crate) rounds: usize,
    pub(crate) sessions: u32,
    pub(crate) rules: Vec<usize>,
    pub(crate) quick: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--repeat N] [--rounds N] [--sessions N] [--rules N,N,...] [--quick]\n\
         \x20 --repeat N    packets per measurement (default 1000000; --quick: 100000)\n\
         \x20 --rounds N    measurements per case, interleaved; median and min reported (default 5; --quick: 3)\n\
         \x20 --sessions N  sessions filled before the loaded-table cases (default 1000000; --quick: 100000)\n\
         \x20 --rules LIST  rule counts of the loaded-table scenarios (default 10000,100000)\n\
         \x20 --quick       short run (smaller repeat, rounds and session fill)"
    );
    std::process::exit(2)
}

pub(crate) fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = Args {
        repeat: if quick { 100_000 } else { 1_000_000 },
        rounds: if quick { 3 } else { 5 },
        sessions: if quick { 100_000 } else { 1_000_000 },
        rules: vec![10_000, 100_000],
        quick,
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> String {
            it.next().cloned().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                usage()
            })
        };
        let num = |name: &str, v: String| -> u64 {
            v.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("{name}: not a number: {v}");
                usage()
            })
        };
        match arg.as_str() {
            "--quick" => {}
            "--repeat" => {
                a.repeat = num("--repeat", value("--repeat")).clamp(1, 100_000_000) as u32
            }
            "--rounds" => a.rounds = num("--rounds", value("--rounds")).clamp(1, 50) as usize,
            "--sessions" => a.sessions = num("--sessions", value("--sessions")).min(1 << 20) as u32,
            "--rules" => {
                let v = value("--rules");
                a.rules = v
                    .split(',')
                    .map(|s| num("--rules", s.to_string()).clamp(1, 250_000) as usize)
                    .collect();
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument {other}");
                usage()
            }
        }
    }
    a
}
