// React hooks over a chatvault vault: persisted state with optimistic
// writes, and live queries that follow the vault's change events (this
// tab, other tabs, sync) without polling.
//
//   import { usePersistence, useConversations, useMessages, useSyncStatus } from "chatvault/react";
//   const [draft, setDraft, { loading, error }] = usePersistence("draft", "");
//   const { items, loadMore, hasMore } = useConversations(vault, { search });
//   const { items: messages, loadOlder } = useMessages(vault, conversationId);
//   const status = useSyncStatus(vault.sync);
//
// `react` (18 or newer) is a peer dependency; nothing here loads the
// WebAssembly binding until a hook needs the default storage.

import { useCallback, useEffect, useMemo, useReducer, useRef, useState, useSyncExternalStore } from "react";
import { ChatvaultError } from "./internal.js";
import { openKv } from "./index.js";
import { replacer, reviver } from "./zustand.js";

/** The namespace `usePersistence` uses when given no storage. */
export const DEFAULT_NAMESPACE = "chatvault-react";

/** First and longest wait between retries of a failed write. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;

let defaultStorage = null;

function asError(e) {
  if (e instanceof ChatvaultError) return e;
  return new ChatvaultError(typeof e?.code === "string" ? e.code : "internal", String(e?.message ?? e), {
    cause: e,
  });
}

/** What is stored for a key: the value and the version it was written at. */
function encode(value, version) {
  return JSON.stringify({ version, value }, replacer);
}

function decode(text) {
  const parsed = JSON.parse(text, reviver);
  if (parsed && typeof parsed === "object" && "version" in parsed && "value" in parsed) return parsed;
  // Written by something else (a plain JSON value): version 0.
  return { version: 0, value: parsed };
}

/**
 * State kept in a chatvault key-value namespace (`options.storage`: a Kv
 * or a promise of one, plain or sealed by a vault; by default
 * `openKv("local", "chatvault-react")`).
 *
 * - The first render shows `initial` with `loading: true`; the stored
 *   value replaces it once read (migrated by `options.migrate(old,
 *   fromVersion)` when it was written at another `options.version`).
 * - `setValue(next | prev => next)` updates the state at once
 *   (optimistic) and writes in the background. Writes never run before
 *   the first read finished (a set made while loading wins over what is
 *   read), never run two at a time, and never lose the last value: fast
 *   successive sets coalesce into writes of the newest value.
 * - A failed write shows in `error` and is retried (from 0.5 s, doubling
 *   up to 30 s) until it succeeds or a newer value replaces it; `error`
 *   clears once a write succeeds.
 */
export function usePersistence(key, initial, options = {}) {
  const { storage, version = 0, migrate } = options;
  const [state, setState] = useState(() => ({ value: initial, loading: true, error: null }));
  const latest = useRef({ initial, migrate });
  latest.current = { initial, migrate };

  const kvPromise = useMemo(() => {
    if (storage) return Promise.resolve(storage);
    defaultStorage ??= openKv("local", DEFAULT_NAMESPACE);
    return defaultStorage;
  }, [storage]);

  // One record per key (and storage and version): what the background
  // writer needs, outside React's render cycle. Created during render so
  // that `setValue` works from the first render on.
  const slot = useMemo(
    () => ({ value: initial, loaded: false, dirty: false, writing: false, timer: null, mounted: true }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [kvPromise, key, version],
  );

  /** Writes the slot's newest value if owed: one write at a time, retried until it lands. */
  const flush = useCallback(
    async (s, attempt = 0) => {
      if (!s.loaded || s.writing || !s.dirty) return;
      s.writing = true;
      s.dirty = false;
      try {
        const kv = await kvPromise;
        await kv.set(key, encode(s.value, version));
        s.writing = false;
        if (s.mounted) setState((prev) => (prev.error ? { ...prev, error: null } : prev));
        flush(s, 0); // a newer value may have come meanwhile
      } catch (e) {
        s.writing = false;
        s.dirty = true; // still owed, unless a newer value took its place
        if (!s.mounted) return;
        setState((prev) => ({ ...prev, error: asError(e) }));
        clearTimeout(s.timer);
        s.timer = setTimeout(() => flush(s, attempt + 1), Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt));
      }
    },
    [kvPromise, key, version],
  );

  useEffect(() => {
    const s = slot;
    s.mounted = true;
    let current = true;
    setState({ value: s.value, loading: !s.loaded, error: null });
    (async () => {
      let loaded = null;
      let error = null;
      try {
        const kv = await kvPromise;
        const text = await kv.get(key);
        if (text !== null && text !== undefined) {
          const stored = decode(text);
          if (stored.version === version) loaded = { value: stored.value };
          else if (latest.current.migrate) {
            loaded = { value: await latest.current.migrate(stored.value, stored.version) };
          }
          // Another version and no `migrate`: start from `initial`.
        }
      } catch (e) {
        error = asError(e);
      }
      if (!current) return;
      s.loaded = true;
      // A set made while loading is newer than what was read: it wins.
      if (!s.dirty && loaded) s.value = loaded.value;
      setState({ value: s.value, loading: false, error });
      flush(s);
    })();
    return () => {
      current = false;
      s.mounted = false;
      clearTimeout(s.timer);
      // Unmounted (or another key): what is owed is still written, once.
      flush(s);
    };
  }, [slot, kvPromise, key, version, flush]);

  const setValue = useCallback(
    (next) => {
      slot.value = typeof next === "function" ? next(slot.value) : next;
      slot.dirty = true;
      const value = slot.value;
      setState((prev) => ({ ...prev, value }));
      clearTimeout(slot.timer);
      flush(slot);
    },
    [slot, flush],
  );

  return [state.value, setValue, { loading: state.loading, error: state.error }];
}

/**
 * Calls `reload()` when `vault` reports a change that `concerns(change)`;
 * changes arriving together (a burst from sync, say) cause one reload.
 */
function useChanges(vault, concerns, reload) {
  const concernsRef = useRef(concerns);
  concernsRef.current = concerns;
  useEffect(() => {
    if (!vault) return undefined;
    let queued = false;
    const unsubscribe = vault.subscribe((change) => {
      if (!concernsRef.current(change) || queued) return;
      queued = true;
      queueMicrotask(() => {
        queued = false;
        reload();
      });
    });
    return unsubscribe;
  }, [vault, reload]);
}

/** A live list's state, and the one way it changes. */
function listReducer(state, action) {
  switch (action.type) {
    case "loading":
      return { ...state, loading: true };
    case "loaded":
      return { items: action.items, hasMore: action.hasMore, loading: false, error: null };
    case "failed":
      return { ...state, loading: false, error: action.error };
    default:
      return state;
  }
}

const EMPTY_LIST = { items: [], hasMore: false, loading: true, error: null };

/**
 * Runs `load()` now, whenever `deps` change and on `reload()`; only the
 * newest run's answer is shown (an older one finishing late is dropped).
 */
function useLiveList(load, deps) {
  const [state, dispatch] = useReducer(listReducer, EMPTY_LIST);
  const generation = useRef(0);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const run = useCallback(load, deps);
  const reload = useCallback(() => {
    const mine = ++generation.current;
    dispatch({ type: "loading" });
    run().then(
      (result) => mine === generation.current && result && dispatch({ type: "loaded", ...result }),
      (e) => mine === generation.current && dispatch({ type: "failed", error: asError(e) }),
    );
  }, [run]);
  useEffect(() => {
    reload();
    return () => {
      generation.current++;
    };
  }, [reload]);
  return [state, reload];
}

/**
 * The vault's conversations, most recent activity first, live: `pageSize`
 * at first (default 50), `loadMore()` for the next page. With `search`,
 * the conversations whose title contains it (case-insensitive; titles are
 * encrypted at rest, so this reads every conversation's title — fine for
 * the thousands a person has).
 */
export function useConversations(vault, options = {}) {
  const { pageSize = 50, search = "" } = options;
  const [pages, setPages] = useState(1);
  const needle = search.trim().toLocaleLowerCase();
  useEffect(() => setPages(1), [vault, needle, pageSize]);
  const [state, reload] = useLiveList(async () => {
    if (!vault) return { items: [], hasMore: false };
    const wanted = pages * pageSize;
    const items = [];
    let after;
    for (;;) {
      const page = await vault.conversations({ limit: Math.min(1000, needle ? 1000 : wanted - items.length), after });
      for (const c of page.items) {
        if (!needle || c.title.toLocaleLowerCase().includes(needle)) items.push(c);
      }
      after = page.nextCursor ?? undefined;
      if (!after || items.length >= wanted) break;
    }
    return { items: items.slice(0, wanted), hasMore: items.length > wanted || Boolean(after) };
  }, [vault, pages, pageSize, needle]);
  useChanges(vault, (change) => change.kind !== "key" && change.kind !== "settings", reload);
  const loadMore = useCallback(() => setPages((n) => n + 1), []);
  return { ...state, loadMore, reload };
}

/**
 * A conversation's messages, oldest first, live: the newest `pageSize`
 * (default 50), `loadOlder()` for the page before. Empty for a `null` id.
 */
export function useMessages(vault, conversationId, options = {}) {
  const { pageSize = 50 } = options;
  const [pages, setPages] = useState(1);
  // What is on screen already stays there when new messages arrive: a
  // reload reads back to the oldest message shown (or `pages` pages).
  const shown = useRef({ conversationId, oldest: null, count: 0 });
  useEffect(() => setPages(1), [vault, conversationId, pageSize]);
  const [state, reload] = useLiveList(async () => {
    if (!vault || !conversationId) return { items: [], hasMore: false };
    if (shown.current.conversationId !== conversationId) {
      shown.current = { conversationId, oldest: null, count: 0 };
    }
    const { oldest, count } = shown.current;
    const wanted = pages * pageSize;
    // If the oldest shown message is gone, stop a page past what was shown.
    const most = Math.max(wanted, count + pageSize);
    const newestFirst = [];
    let before;
    let reachedOldest = oldest === null;
    for (;;) {
      const limit = Math.min(1000, Math.max(pageSize, wanted - newestFirst.length));
      const page = await vault.messages(conversationId, { limit, before });
      newestFirst.push(...page.items);
      reachedOldest ||= page.items.some((m) => m.id === oldest);
      before = page.nextCursor ?? undefined;
      if (!before) break;
      if (newestFirst.length >= wanted && (reachedOldest || newestFirst.length >= most)) break;
    }
    // Pages are whole: drop what reaches past the oldest shown (or past
    // `wanted`, the first time).
    const oldestAt = oldest === null ? -1 : newestFirst.findIndex((m) => m.id === oldest);
    const keep = Math.max(oldestAt + 1, Math.min(wanted, newestFirst.length));
    const hasMore = Boolean(before) || keep < newestFirst.length;
    newestFirst.length = keep;
    const items = newestFirst.reverse();
    shown.current = { conversationId, oldest: items[0]?.id ?? null, count: items.length };
    return { items, hasMore };
  }, [vault, conversationId, pages, pageSize]);
  useChanges(
    vault,
    (change) =>
      change.kind === "sync" ||
      (change.kind === "message" && change.conversationId === conversationId) ||
      (change.kind === "conversation" && (!change.conversationId || change.conversationId === conversationId)),
    reload,
  );
  const loadOlder = useCallback(() => setPages((n) => n + 1), []);
  const { hasMore, ...rest } = state;
  return { ...rest, hasOlder: hasMore, loadOlder, reload };
}

const noSync = () => () => {};
const nothing = () => null;

/** The live status of a `Sync` (or `null` without one). */
export function useSyncStatus(sync) {
  const subscribe = useMemo(() => (sync ? (onChange) => sync.subscribe(onChange) : noSync), [sync]);
  const snapshot = useMemo(() => (sync ? () => sync.status : nothing), [sync]);
  return useSyncExternalStore(subscribe, snapshot, nothing);
}
