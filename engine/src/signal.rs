//! A wake-everyone signal between tasks of one executor: the engine wakes
//! appenders with it when writes complete, and the broker uses it for its
//! shard-local events.
//!
//! A task reads the generation, checks its condition, and if it must wait,
//! waits for the generation to move on; whoever changes the condition calls
//! [`Signal::notify`]. Reading the generation before checking means a
//! change made between the check and the wait is never missed.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Signal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Moves the generation on and wakes every waiting task.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Returns once the generation differs from `seen`.
    pub async fn changed_since(&self, seen: u64) {
        poll_fn(|cx| {
            if self.generation.get() != seen {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
