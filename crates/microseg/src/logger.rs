//! Logs to stderr; `MICROSEG_LOG=debug|info|warn|error` sets the level (default info).
//! Each record is one line with its control characters escaped: a name or file name that
//! holds a newline or a terminal escape can neither forge a log line nor repaint a
//! terminal.

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let text = r.args().to_string();
            eprintln!("{:5} {}", r.level(), crate::client::output::esc(&text));
        }
    }
    fn flush(&self) {}
}

pub fn init() {
    let level = match std::env::var("MICROSEG_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("error") => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    };
    let _ = log::set_logger(&Stderr);
    log::set_max_level(level);
}
