//! The runtime seam: sleeping, timeouts, spawning and a monotonic clock,
//! the only things the sync loop needs from an executor. Natively they are
//! tokio's (so `tokio::time::pause` still drives tests); in a browser,
//! `setTimeout`, `performance.now()` and `wasm_bindgen_futures::spawn_local`
//! on the page's (or worker's) one thread.
//!
//! Spawned tasks come back as a [`RemoteHandle`]: awaiting it waits for the
//! task, dropping it cancels the task, `forget` detaches it.

use std::future::Future;
use std::time::Duration;

use futures::future::{FutureExt as _, RemoteHandle};

#[cfg(not(target_family = "wasm"))]
pub(crate) use tokio::time::{sleep, Instant};

/// `fut`'s output, or `None` if `limit` passed first.
pub(crate) async fn timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    #[cfg(not(target_family = "wasm"))]
    {
        tokio::time::timeout(limit, fut).await.ok()
    }
    #[cfg(target_family = "wasm")]
    {
        let fut = std::pin::pin!(fut);
        let timer = std::pin::pin!(sleep(limit));
        match futures::future::select(fut, timer).await {
            futures::future::Either::Left((out, _)) => Some(out),
            futures::future::Either::Right(_) => None,
        }
    }
}

/// Runs `fut` on the runtime (a tokio task natively).
#[cfg(not(target_family = "wasm"))]
pub(crate) fn spawn<F>(fut: F) -> RemoteHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (task, handle) = fut.remote_handle();
    tokio::spawn(task);
    handle
}

/// Runs `fut` on the page's event loop (`spawn_local`).
#[cfg(target_family = "wasm")]
pub(crate) fn spawn<F>(fut: F) -> RemoteHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let (task, handle) = fut.remote_handle();
    wasm_bindgen_futures::spawn_local(task);
    handle
}

#[cfg(target_family = "wasm")]
pub(crate) use browser::{sleep, Instant};

#[cfg(target_family = "wasm")]
mod browser {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::JsFuture;

    // Global functions, so they work in a window and in a worker alike.
    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_name = setTimeout)]
        fn set_timeout(handler: &js_sys::Function, ms: f64) -> JsValue;
        #[wasm_bindgen(js_name = clearTimeout)]
        fn clear_timeout(id: &JsValue);
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
    }

    /// A `setTimeout`, cleared if dropped before it fires.
    pub(crate) struct Sleep {
        id: JsValue,
        done: JsFuture,
        fired: bool,
    }

    /// Completes after `duration` (a `setTimeout`).
    pub(crate) fn sleep(duration: Duration) -> Sleep {
        let mut id = JsValue::UNDEFINED;
        // setTimeout takes at most 2^31 - 1 ms; longer waits wake early,
        // which the loop treats as any other wake-up.
        let ms = duration.as_secs_f64() * 1000.0;
        let promise = js_sys::Promise::new(&mut |resolve, _reject| {
            id = set_timeout(&resolve, ms.min(2_147_483_647.0));
        });
        Sleep {
            id,
            done: JsFuture::from(promise),
            fired: false,
        }
    }

    impl Future for Sleep {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            match Pin::new(&mut self.done).poll(cx) {
                Poll::Ready(_) => {
                    self.fired = true;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl Drop for Sleep {
        fn drop(&mut self) {
            if !self.fired {
                clear_timeout(&self.id);
            }
        }
    }

    /// A monotonic instant (`performance.now()`, milliseconds).
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Instant(f64);

    impl Instant {
        pub(crate) fn now() -> Instant {
            Instant(performance_now())
        }

        pub(crate) fn elapsed(&self) -> Duration {
            Duration::from_secs_f64(((performance_now() - self.0) / 1000.0).max(0.0))
        }
    }
}
