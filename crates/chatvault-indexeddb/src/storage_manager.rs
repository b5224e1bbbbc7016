//! What the browser says about this site's storage: `navigator.storage`'s
//! `estimate()` (usage and quota) and `persisted()`, read from the global
//! scope so it works in a page and in a Web Worker alike.
//!
//! Both are hints the store reports, never conditions it writes under: an
//! environment without them (no `navigator.storage`, an insecure context,
//! a promise that rejects) yields "unknown", not an error.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The browser's estimate for this site's origin (every database, cache
/// and file of it, not one store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Estimate {
    /// Bytes the origin uses.
    pub(crate) usage: Option<u64>,
    /// Bytes the origin may use.
    pub(crate) quota: Option<u64>,
}

/// Calls `navigator.storage[method]()` and awaits its promise; `None` when
/// any part of it is missing or fails.
async fn call(method: &str) -> Option<JsValue> {
    let get = |target: &JsValue, name: &str| {
        Reflect::get(target, &JsValue::from_str(name))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    let storage = get(&get(&js_sys::global(), "navigator")?, "storage")?;
    let function: Function = get(&storage, method)?.dyn_into().ok()?;
    let promise: Promise = function.call0(&storage).ok()?.dyn_into().ok()?;
    JsFuture::from(promise).await.ok()
}

/// A non-negative whole number of bytes from a field of `o`.
fn bytes_field(o: &JsValue, name: &str) -> Option<u64> {
    let n = Reflect::get(o, &JsValue::from_str(name)).ok()?.as_f64()?;
    (n.is_finite() && n >= 0.0).then_some(n as u64)
}

/// `navigator.storage.estimate()`; all `None` when unavailable.
pub(crate) async fn estimate() -> Estimate {
    match call("estimate").await {
        Some(e) => Estimate {
            usage: bytes_field(&e, "usage"),
            quota: bytes_field(&e, "quota"),
        },
        None => Estimate::default(),
    }
}

/// `navigator.storage.persisted()`: whether the browser granted this
/// origin persistent storage (exempt from eviction); `false` when it
/// cannot tell.
pub(crate) async fn persisted() -> bool {
    call("persisted").await.and_then(|v| v.as_bool()) == Some(true)
}
