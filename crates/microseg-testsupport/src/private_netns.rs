//! Network namespaces private to a thread: they, and every link in them, go away with
//! the thread, however the test ends. Nothing to name, nothing to delete.

use std::sync::mpsc;
use std::thread::JoinHandle;

fn unshare_netns() {
    // SAFETY: changes the calling thread's namespace only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    // IPv6 would add router solicitations and MLD reports to the test's own traffic.
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
}

/// Runs `test` on a thread in a network namespace of its own; its panic is the caller's.
pub fn on_own_netns(test: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::spawn(move || {
        unshare_netns();
        test();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a network namespace of its own, running the jobs it is given.
pub struct PrivateNetns {
    /// The thread's id: `ip link set DEV netns <tid>` moves a link in.
    pub tid: i32,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl PrivateNetns {
    pub fn new() -> PrivateNetns {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            unshare_netns();
            // SAFETY: no arguments, cannot fail.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            for job in inbox {
                job();
            }
        });
        let tid = tid_rx.recv().expect("namespace thread started");
        PrivateNetns {
            tid,
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Runs `f` in the namespace and returns what it returns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .expect("running")
            .send(job)
            .expect("namespace thread alive");
        rx.recv().expect("the job panicked in its namespace")
    }
}

impl Default for PrivateNetns {
    fn default() -> Self {
        PrivateNetns::new()
    }
}

impl Drop for PrivateNetns {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name:?}");
    i
}
