//! Waiting on several futures of one task at once, without spawning.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Runs all futures concurrently and returns their outputs in order.
pub async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + '_>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (slot, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(
                outputs
                    .iter_mut()
                    .map(|o| o.take().expect("every future finished"))
                    .collect(),
            )
        }
    })
    .await
}

/// Returns the output of whichever future finishes first; the rest are dropped.
pub async fn select_first<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Option<T> {
    if futures.is_empty() {
        return None;
    }
    std::future::poll_fn(move |cx| {
        for fut in futures.iter_mut() {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
        }
        Poll::Pending
    })
    .await
}
