//! The engine's own io_uring ring, for the writes and syncs of active
//! segments.
//!
//! glommio hands its file I/O to the kernel only when it polls, between runs
//! of its task queues (up to 100 ms apart by default). A segment write
//! started behind other runnable appends therefore waits for all their CPU
//! work (CRC checks, parsing, copies) before the disk sees it, and a sync
//! waits again after it. An operation started here enters the kernel at
//! once, in the call that starts it.
//!
//! Completions come back through an eventfd the ring signals: one task per
//! executor reads it through glommio and wakes the waiters; a waiter being
//! polled also collects any completions already posted, which costs no
//! system call.
//!
//! Invariants:
//! * the ring owns each operation's buffer and holds its file open until the
//!   kernel has completed it, so dropping a waiter never frees memory or
//!   closes a descriptor the kernel still uses;
//! * every operation started is submitted by the call that starts it, or
//!   that call fails it; an entry whose submission failed may still reach
//!   the kernel with a later one, so its buffer and file stay held, as if
//!   it were in flight.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use glommio::io::{BufferedFile, DmaBuffer, DmaFile};
use io_uring::{opcode, squeue, types, IoUring};

/// Submission queue entries. Each operation is submitted as it starts, so
/// the queue never holds more than one; completions beyond the completion
/// queue's 2 × this wait in the kernel's overflow list, never dropped.
const RING_ENTRIES: u32 = 64;

/// Attempts to submit one operation when the kernel is short of resources
/// or its completion queue is full, each after collecting completions.
const SUBMIT_ATTEMPTS_MAX: u32 = 64;

/// How long a dropped ring waits for each of its operations still in
/// flight, at most.
const DROP_WAIT: Duration = Duration::from_secs(5);

/// Without an eventfd to read, completions are collected this often.
const REAP_POLL: Duration = Duration::from_millis(1);

struct Op {
    /// Held until completion: the kernel reads the buffer and the
    /// descriptor until then.
    _file: Rc<DmaFile>,
    _buf: Option<DmaBuffer>,
    result: Option<i32>,
    waker: Option<Waker>,
    /// Its waiter is gone: the slot is freed on completion.
    abandoned: bool,
}

struct Uring {
    uring: IoUring,
    slots: Vec<Option<Op>>,
    free: Vec<usize>,
    in_flight: usize,
    /// Signalled by the kernel on every completion; the reaper reads a
    /// duplicate of it.
    events: OwnedFd,
}

/// One ring per executor, shared by its logs through their context. The
/// kernel ring is set up on first use, inside the executor.
#[derive(Default)]
pub struct IoRing {
    uring: RefCell<Option<Uring>>,
    /// The executor whose task reaps completions.
    reaper_executor: Cell<Option<usize>>,
}

impl IoRing {
    /// Writes the whole of `buf` at `pos` of `file` (direct I/O); resolves
    /// to the number of bytes written.
    pub(crate) fn write(
        self: &Rc<Self>,
        file: &Rc<DmaFile>,
        buf: DmaBuffer,
        pos: u64,
    ) -> Completion {
        let len = u32::try_from(buf.len()).expect("a segment write is shorter than 4 GiB");
        let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), len)
            .offset(pos)
            .build();
        self.start(entry, file, Some(buf))
    }

    /// `fdatasync`s `file`.
    pub(crate) fn fdatasync(self: &Rc<Self>, file: &Rc<DmaFile>) -> Completion {
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        self.start(entry, file, None)
    }

    fn start(
        self: &Rc<Self>,
        entry: squeue::Entry,
        file: &Rc<DmaFile>,
        buf: Option<DmaBuffer>,
    ) -> Completion {
        match self.submit(entry, file, buf) {
            Ok(slot) => Completion {
                ring: self.clone(),
                state: CompletionState::Waiting(slot),
            },
            Err(e) => Completion {
                ring: self.clone(),
                state: CompletionState::Failed(Some(e)),
            },
        }
    }

    fn submit(
        self: &Rc<Self>,
        entry: squeue::Entry,
        file: &Rc<DmaFile>,
        buf: Option<DmaBuffer>,
    ) -> io::Result<usize> {
        self.ensure_reaper()?;
        let mut woken = Vec::new();
        let outcome = self.submit_collecting(entry, file, buf, &mut woken);
        for w in woken {
            w.wake();
        }
        outcome
    }

    /// [`IoRing::submit`], adding to `woken` the waiters of completions it
    /// collects on the way.
    fn submit_collecting(
        &self,
        entry: squeue::Entry,
        file: &Rc<DmaFile>,
        buf: Option<DmaBuffer>,
        woken: &mut Vec<Waker>,
    ) -> io::Result<usize> {
        let mut guard = self.uring.borrow_mut();
        let ring = guard.as_mut().expect("set up by ensure_reaper");
        let slot = match ring.free.pop() {
            Some(slot) => slot,
            None => {
                ring.slots.push(None);
                ring.slots.len() - 1
            }
        };
        let entry = entry.user_data(slot as u64);
        // SAFETY: the entry's buffer and descriptor are kept alive in the
        // slot below until its completion is collected (or, for a dropped
        // ring, until `Drop` has waited for it).
        let pushed = unsafe { ring.uring.submission().push(&entry) };
        if pushed.is_err() {
            // Every start submits what it queued, so the queue is never full.
            ring.free.push(slot);
            return Err(io::Error::other("io_uring submission queue full"));
        }
        ring.slots[slot] = Some(Op {
            _file: file.clone(),
            _buf: buf,
            result: None,
            waker: None,
            abandoned: false,
        });
        ring.in_flight += 1;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match ring.uring.submit() {
                Ok(_) => return Ok(slot),
                Err(e)
                    if attempts < SUBMIT_ATTEMPTS_MAX
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                        ) =>
                {
                    // Make room: completions already posted are collected.
                    woken.extend(collect(ring));
                }
                Err(e) => {
                    // The entry may still reach the kernel with a later
                    // submission: the slot stays, abandoned, holding its
                    // buffer and file, and counts as in flight.
                    ring.slots[slot].as_mut().expect("just filled").abandoned = true;
                    return Err(e);
                }
            }
        }
    }

    /// Sets up the kernel ring, and the task reaping its completions on
    /// this executor, if not done yet.
    fn ensure_reaper(self: &Rc<Self>) -> io::Result<()> {
        let executor = glommio::executor().id();
        if self.reaper_executor.get() == Some(executor) {
            return Ok(());
        }
        if self.uring.borrow().is_none() {
            *self.uring.borrow_mut() = Some(Uring::new()?);
        }
        let events = {
            let guard = self.uring.borrow();
            let ring = guard.as_ref().expect("set up above");
            ring.events.try_clone()?
        };
        // SAFETY: the descriptor is a fresh duplicate that only this file
        // owns and closes.
        let events = unsafe { BufferedFile::from_raw_fd(events.into_raw_fd()) };
        let ring = Rc::downgrade(self);
        glommio::spawn_local(reaper(ring, events)).detach();
        self.reaper_executor.set(Some(executor));
        Ok(())
    }

    /// Collects posted completions and wakes their waiters.
    fn reap(&self) {
        let wakers = {
            let mut guard = self.uring.borrow_mut();
            match guard.as_mut() {
                Some(ring) => collect(ring),
                None => Vec::new(),
            }
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Uring {
    /// Frees a slot whose operation has completed, for the next one.
    fn release(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.free.push(slot);
    }

    fn new() -> io::Result<Uring> {
        let uring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, owned by nothing else.
        let events = unsafe { OwnedFd::from_raw_fd(fd) };
        uring.submitter().register_eventfd(events.as_raw_fd())?;
        Ok(Uring {
            uring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            events,
        })
    }
}

/// Records the posted completions in their slots; returns the wakers of
/// their waiters.
fn collect(ring: &mut Uring) -> Vec<Waker> {
    let mut wakers = Vec::new();
    for cqe in ring.uring.completion() {
        ring.in_flight -= 1;
        let slot = cqe.user_data() as usize;
        let op = ring.slots[slot]
            .as_mut()
            .expect("a completion is of an operation in flight");
        assert!(op.result.is_none(), "an operation completes once");
        op.result = Some(cqe.result());
        if op.abandoned {
            // `release`, by field: the completion queue is borrowed.
            ring.slots[slot] = None;
            ring.free.push(slot);
        } else if let Some(w) = op.waker.take() {
            wakers.push(w);
        }
    }
    wakers
}

/// The reaper: waits for the eventfd and collects completions, until the
/// ring is gone.
async fn reaper(ring: Weak<IoRing>, events: BufferedFile) {
    let mut eventfd_works = true;
    loop {
        match ring.upgrade() {
            Some(r) => r.reap(),
            None => break,
        }
        if eventfd_works {
            if let Err(e) = events.read_at(0, 8).await {
                tracing::error!(error = %e, "cannot read the segment I/O ring's eventfd; polling it instead");
                eventfd_works = false;
            }
        } else {
            glommio::timer::sleep(REAP_POLL).await;
        }
    }
    if let Err(e) = events.close().await {
        tracing::warn!(error = %e, "closing the segment I/O ring's eventfd");
    }
}

enum CompletionState {
    Waiting(usize),
    Failed(Option<io::Error>),
    Done,
}

/// Resolves to the result of one operation on the ring: the count the
/// kernel returned, or its error.
pub(crate) struct Completion {
    ring: Rc<IoRing>,
    state: CompletionState,
}

impl Future for Completion {
    type Output = io::Result<u32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u32>> {
        let slot = match &mut self.state {
            CompletionState::Waiting(slot) => *slot,
            CompletionState::Failed(e) => {
                let e = e.take().expect("a failed completion is polled once");
                self.state = CompletionState::Done;
                return Poll::Ready(Err(e));
            }
            CompletionState::Done => panic!("a completion is polled after it resolved"),
        };
        self.ring.reap();
        let mut guard = self.ring.uring.borrow_mut();
        let ring = guard.as_mut().expect("a waiting operation has its ring");
        let op = ring.slots[slot]
            .as_mut()
            .expect("a waiting operation holds its slot");
        match op.result {
            Some(res) => {
                ring.release(slot);
                drop(guard);
                self.state = CompletionState::Done;
                Poll::Ready(if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as u32)
                })
            }
            None => {
                op.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let CompletionState::Waiting(slot) = self.state else {
            return;
        };
        let mut guard = self.ring.uring.borrow_mut();
        let ring = guard.as_mut().expect("a waiting operation has its ring");
        let op = ring.slots[slot]
            .as_mut()
            .expect("a waiting operation holds its slot");
        if op.result.is_some() {
            ring.release(slot);
        } else {
            op.abandoned = true;
            op.waker = None;
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Buffers and descriptors of operations still in flight must
        // outlive them. Each wait is bounded; past it they are leaked
        // rather than freed under the kernel.
        let args = types::Timespec::from(DROP_WAIT);
        while self.in_flight > 0 {
            let before = self.in_flight;
            let submit_args = types::SubmitArgs::new().timespec(&args);
            let waited = self.uring.submitter().submit_with_args(1, &submit_args);
            for cqe in self.uring.completion() {
                let slot = cqe.user_data() as usize;
                self.slots[slot] = None;
                self.in_flight -= 1;
            }
            if waited.is_err() && self.in_flight == before {
                tracing::error!(
                    in_flight = self.in_flight,
                    "segment I/O still in flight at shutdown; its buffers are leaked"
                );
                for op in self.slots.drain(..).flatten() {
                    std::mem::forget(op);
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    const BLOCK_BYTES: usize = 4096;

    fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("executor finished");
    }

    fn block_of(file: &DmaFile, byte: u8) -> DmaBuffer {
        let mut buf = file.alloc_dma_buffer(BLOCK_BYTES);
        buf.as_bytes_mut().fill(byte);
        buf
    }

    #[test]
    fn a_write_whose_waiter_is_dropped_still_lands() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segment");
        let check = path.clone();
        run(move || async move {
            let file = Rc::new(DmaFile::create(&path).await.expect("create"));
            let ring = Rc::new(IoRing::default());
            drop(ring.write(&file, block_of(&file, 0xa5), 0));
            let n = ring
                .write(&file, block_of(&file, 0x5a), BLOCK_BYTES as u64)
                .await
                .expect("second write");
            assert_eq!(n as usize, BLOCK_BYTES);
            ring.fdatasync(&file).await.expect("sync");
            // Dropping the ring waits for the abandoned write, whose
            // buffer it still holds.
            drop(ring);
        });
        let bytes = std::fs::read(check).expect("read back");
        assert_eq!(bytes.len(), 2 * BLOCK_BYTES);
        assert!(bytes[..BLOCK_BYTES].iter().all(|&b| b == 0xa5));
        assert!(bytes[BLOCK_BYTES..].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn a_failed_write_returns_the_kernels_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segment");
        std::fs::write(&path, vec![0u8; BLOCK_BYTES]).expect("make file");
        run(move || async move {
            // Opened read-only: the kernel refuses the write.
            let file = Rc::new(DmaFile::open(&path).await.expect("open"));
            let ring = Rc::new(IoRing::default());
            let err = ring
                .write(&file, block_of(&file, 1), 0)
                .await
                .expect_err("a write to a read-only file fails");
            assert_eq!(err.raw_os_error(), Some(libc::EBADF));
            // The ring goes on working after a failure.
            let n = ring
                .fdatasync(&file)
                .await
                .expect("sync of a read-only file");
            assert_eq!(n, 0);
        });
    }

    #[test]
    fn many_writes_in_flight_each_complete_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segment");
        let check = path.clone();
        // More than the completion queue holds, so some wait in the
        // kernel's overflow list.
        let count = 3 * RING_ENTRIES as usize;
        run(move || async move {
            let file = Rc::new(DmaFile::create(&path).await.expect("create"));
            let ring = Rc::new(IoRing::default());
            let completions: Vec<Completion> = (0..count)
                .map(|i| ring.write(&file, block_of(&file, i as u8), (i * BLOCK_BYTES) as u64))
                .collect();
            for c in completions {
                assert_eq!(c.await.expect("write") as usize, BLOCK_BYTES);
            }
            let guard = ring.uring.borrow();
            let uring = guard.as_ref().expect("set up");
            assert_eq!(uring.in_flight, 0);
            assert_eq!(uring.free.len(), uring.slots.len());
        });
        let bytes = std::fs::read(check).expect("read back");
        assert_eq!(bytes.len(), count * BLOCK_BYTES);
        for (i, block) in bytes.chunks(BLOCK_BYTES).enumerate() {
            assert!(block.iter().all(|&b| b == i as u8), "block {i}");
        }
    }
}
