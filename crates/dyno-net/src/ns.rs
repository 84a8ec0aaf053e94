//! Network namespaces: the only module that switches namespaces (`unshare`, `setns`).
//!
//! Switching happens on one dedicated OS thread, never on a caller's thread (but for
//! [`Netns::run_on_this_thread`], for single-threaded programs): a thread that is
//! caught in the wrong namespace (a panic, an async runtime moving tasks between threads) would
//! silently configure the wrong network. The thread takes small jobs ("create a namespace and open
//! these sockets inside it", "run this inside that namespace") and always returns home afterwards.
//! Sockets opened inside a namespace stay bound to it, so callers open them once here and then use
//! them from anywhere.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustix::mount::UnmountFlags;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// An error of this module; `context` says what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct NsError {
    pub context: String,
    #[source]
    pub source: io::Error,
}

fn ns_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> NsError {
    let context = context.into();
    move |source| NsError { context, source }
}

/// A network namespace, kept alive by an open file descriptor.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// The network namespace of the calling thread.
    pub fn current() -> Result<Netns, NsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// A namespace bound at `path` (e.g. `/run/netns/dyno-web1`).
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NsError> {
        let path = path.as_ref();
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(ns_err(format!("open network namespace {}", path.display())))?;
        Ok(Netns { fd: file.into() })
    }

    pub fn try_clone(&self) -> Result<Netns, NsError> {
        Ok(Netns {
            fd: self
                .fd
                .try_clone()
                .map_err(ns_err("duplicate namespace fd"))?,
        })
    }

    /// Binds the namespace at `path` (an empty file is created there), so it outlives this
    /// process and `ip netns exec` finds it when `path` is under `/run/netns`.
    pub fn bind(&self, path: &Path) -> Result<(), NsError> {
        let what = || format!("bind network namespace at {}", path.display());
        File::options()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map_err(ns_err(what()))?;
        let source = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        if let Err(e) = rustix::mount::mount_bind(source.as_str(), path) {
            let _ = std::fs::remove_file(path);
            return Err(ns_err(what())(e.into()));
        }
        Ok(())
    }

    /// Runs `job` on the namespace thread, inside this namespace.
    pub fn run<R, F>(&self, job: F) -> Result<R, NsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let target = self.try_clone()?;
        worker().call(move |home| {
            rustix::thread::move_into_link_name_space(
                target.fd.as_fd(),
                Some(LinkNameSpaceType::Network),
            )
            .map_err(|e| ns_err("enter network namespace")(e.into()))?;
            let result = job();
            return_home(home);
            Ok(result)
        })?
    }

    /// Runs `job` inside this namespace on the calling thread, which goes back to its own
    /// namespace before this returns (also when `job` panics; failing to go back aborts).
    ///
    /// Only for a caller that owns its thread, with no async runtime to move work onto it
    /// meanwhile: a short-lived single-threaded program such as the CNI plugin, which saves
    /// the namespace thread's start (a thread, its stack, a hop each way) on every call.
    pub fn run_on_this_thread<R>(&self, job: impl FnOnce() -> R) -> Result<R, NsError> {
        struct GoBack(OwnedFd);
        impl Drop for GoBack {
            fn drop(&mut self) {
                return_home(&self.0);
            }
        }
        let home = Netns::current()?;
        rustix::thread::move_into_link_name_space(
            self.fd.as_fd(),
            Some(LinkNameSpaceType::Network),
        )
        .map_err(|e| ns_err("enter network namespace")(e.into()))?;
        let _back = GoBack(home.fd);
        Ok(job())
    }

    /// Creates a new, empty network namespace and runs `job` inside it (to open sockets there
    /// and write its sysctls) before the thread returns home.
    pub fn create<R, F>(job: F) -> Result<(Netns, R), NsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        worker().call(move |home| create_here(home, job))?
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Removes the binding made by [`Netns::bind`]. A path that is not there is success: teardown is
/// idempotent. The namespace itself disappears when its last user (process, fd, mount) is gone.
pub fn unbind(path: &Path) -> Result<(), NsError> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) => {}
        // ENOENT: nothing there; EINVAL: a plain file, not (or no longer) a mount point.
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::INVAL => {}
        Err(e) => return Err(ns_err(format!("unmount {}", path.display()))(e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ns_err(format!("remove {}", path.display()))(e)),
    }
}

/// Whether `path` is a bound namespace (a mount of nsfs), not just a leftover empty file.
pub fn is_bound(path: &Path) -> bool {
    match (Netns::open(path), rustix::fs::statfs(path)) {
        (Ok(_), Ok(fs)) => fs.f_type == NSFS_MAGIC,
        _ => false,
    }
}

const NSFS_MAGIC: rustix::fs::FsWord = 0x6e73_6673;

/// Makes `command` start inside `netns` (and, if `uid` is given, as that unprivileged user with
/// the same gid and no supplementary groups). Used for tests and benchmarks; the sandbox will
/// have its own, fuller launcher.
pub fn command_in(command: &mut Command, netns: &Netns, uid: Option<u32>) -> Result<(), NsError> {
    let fd = netns.try_clone()?;
    // SAFETY: the closure runs between fork and exec; it only makes raw syscalls (setns,
    // setgroups, setgid, setuid) on values prepared before the fork: no allocation, no locks.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd.fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Writes a sysctl of the calling thread's network namespace (`net/ipv4/ip_forward`). Only
/// meaningful inside a job of this module, where the thread's namespace is the intended one.
pub fn write_sysctl(name: &str, value: &str) -> Result<(), NsError> {
    let path = PathBuf::from("/proc/sys").join(name);
    std::fs::write(&path, value).map_err(ns_err(format!("write sysctl {name}={value}")))
}

/// Namespaces made ahead of time, in the background, each already prepared by a job (sockets
/// opened inside, sysctls written). Creating a namespace is the largest single cost of a dyno's
/// setup (~0.4 ms here); the namespace thread pays it while idle, so a setup only takes one.
pub struct Spares<T: Send + 'static> {
    inner: Arc<SparesInner<T>>,
}

type Prepare<T> = Box<dyn Fn() -> T + Send + Sync>;

struct SparesInner<T> {
    ready: Mutex<Vec<(Netns, T)>>,
    target: usize,
    prepare: Prepare<T>,
}

/// What the namespace thread does with a pool when it has nothing else to do.
trait Refill: Send + Sync {
    fn wanted(&self) -> bool;
    fn refill_one(&self, home: &OwnedFd);
}

impl<T: Send + 'static> Refill for SparesInner<T> {
    fn wanted(&self) -> bool {
        lock(&self.ready).len() < self.target
    }

    fn refill_one(&self, home: &OwnedFd) {
        if let Ok(spare) = create_here(home, &self.prepare) {
            lock(&self.ready).push(spare);
        }
    }
}

impl<T: Send + 'static> Spares<T> {
    /// A pool that keeps `target` namespaces ready; `prepare` runs inside each new one.
    pub fn new(target: usize, prepare: impl Fn() -> T + Send + Sync + 'static) -> Spares<T> {
        let inner = Arc::new(SparesInner {
            ready: Mutex::new(Vec::with_capacity(target)),
            target,
            prepare: Box::new(prepare),
        });
        let weak: Weak<dyn Refill> = Arc::downgrade(&inner) as Weak<dyn Refill>;
        let worker = worker();
        lock(&worker.refills).push(weak);
        worker.wake();
        Spares { inner }
    }

    /// A prepared namespace: a spare if one is ready, else one made now. While the pool is at
    /// least half full, the one taken is made again after [`Spares::refill`], not now: a
    /// start that takes one has the CPUs busy with itself (a refill then slowed the shim's
    /// spawn from 0.2 to 0.5 ms on 2 CPUs). Below half (many starts at once), at once.
    pub fn take(&self) -> Result<(Netns, T), NsError> {
        let (spare, left) = {
            let mut ready = lock(&self.inner.ready);
            (ready.pop(), ready.len())
        };
        if left < self.inner.target / 2 {
            worker().wake();
        }
        match spare {
            Some(spare) => Ok(spare),
            None => {
                let inner = Arc::clone(&self.inner);
                // By the time the thread takes this job, a refill it was making is done: that
                // one, rather than another made after it.
                worker().call(move |home| match lock(&inner.ready).pop() {
                    Some(spare) => Ok(spare),
                    None => create_here(home, &inner.prepare),
                })?
            }
        }
    }

    /// Tops the pool up in the background, from now on: for when the caller is done with the
    /// work that needed the CPUs.
    pub fn refill(&self) {
        worker().wake();
    }

    pub fn ready(&self) -> usize {
        lock(&self.inner.ready).len()
    }
}

/// On the namespace thread: a new namespace, `prepare` run inside it, and back home.
fn create_here<T>(home: &OwnedFd, prepare: impl FnOnce() -> T) -> Result<(Netns, T), NsError> {
    // SAFETY: CLONE_NEWNET only changes this thread's network namespace; it does not unshare
    // the file table or filesystem state other code relies on (the hazards `unshare_unsafe`
    // warns about are CLONE_FILES/CLONE_FS).
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
        .map_err(|e| ns_err("create network namespace")(e.into()))?;
    let opened = Netns::current();
    let result = prepare();
    return_home(home);
    Ok((opened?, result))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Job = Box<dyn FnOnce(&OwnedFd) + Send>;

struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
    refills: Arc<Mutex<Vec<Weak<dyn Refill>>>>,
}

fn worker() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let refills: Arc<Mutex<Vec<Weak<dyn Refill>>>> = Arc::default();
        let pools = Arc::clone(&refills);
        std::thread::Builder::new()
            .name("dyno-netns".into())
            .spawn(move || {
                let home: OwnedFd = match Netns::current() {
                    Ok(ns) => {
                        let _ = ready_tx.send(Ok(()));
                        ns.fd
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&rx, &home, &pools);
            })
            .expect("spawn the network namespace thread");
        if let Ok(Err(e)) = ready_rx.recv() {
            panic!("network namespace thread cannot start: {e}");
        }
        Worker {
            jobs: Mutex::new(tx),
            refills,
        }
    })
}

/// The namespace thread's loop: jobs first; when there are none, top up one spare at a time
/// (checking for jobs in between, so a caller never waits behind a whole pool refill).
fn serve(jobs: &mpsc::Receiver<Job>, home: &OwnedFd, pools: &Mutex<Vec<Weak<dyn Refill>>>) {
    loop {
        match jobs.try_recv() {
            Ok(job) => {
                job(home);
                continue;
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let wanted = {
            let mut pools = lock(pools);
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).find(|p| p.wanted())
        };
        match wanted {
            Some(pool) => pool.refill_one(home),
            None => match jobs.recv() {
                Ok(job) => job(home),
                Err(_) => return,
            },
        }
    }
}

impl Worker {
    /// Lets an idle namespace thread look at its pools again.
    fn wake(&self) {
        let _ = lock(&self.jobs).send(Box::new(|_| {}));
    }

    fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&OwnedFd) -> R + Send + 'static,
    ) -> Result<R, NsError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let boxed: Job = Box::new(move |home| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(home)));
            if result.is_err() {
                // The job panicked, maybe inside a foreign namespace: go home before anything else.
                return_home(home);
            }
            let _ = tx.send(result);
        });
        let sent = lock(&self.jobs).send(boxed);
        if sent.is_err() {
            return Err(ns_err("network namespace thread")(io::Error::other(
                "it is gone",
            )));
        }
        match rx.recv() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(ns_err("network namespace thread")(io::Error::other(
                "it stopped during the job",
            ))),
        }
    }
}

/// Back to the process's namespace. Failing here would leave the thread in a dyno's namespace
/// and every later job on the wrong network: that is not recoverable, so we abort.
fn return_home(home: &OwnedFd) {
    if let Err(e) =
        rustix::thread::move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network))
    {
        eprintln!("dyno: cannot return the namespace thread to the host namespace: {e}");
        std::process::abort();
    }
}
