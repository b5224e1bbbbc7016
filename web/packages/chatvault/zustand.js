// zustand `persist` on chatvault's key-value namespaces: localStorage,
// sessionStorage or IndexedDB, plain or sealed by an encrypted vault.
//
//   import { persist } from "zustand/middleware";
//   import { openKv } from "chatvault";
//   import { chatvaultStorage } from "chatvault/zustand";
//   const storage = chatvaultStorage(openKv("local", "my-app"));
//   create(persist((set) => ({ ... }), { name: "settings", storage, version: 2, migrate }));
//
// What it adds over `createJSONStorage(() => localStorage)`:
// - Maps and Sets survive a round trip (tagged in the JSON), no
//   `partialize`/`merge` needed for them;
// - no stale hydration: when two reads of a key race (two `rehydrate()`
//   calls, or a rehydrate against a write), a read that finishes after a
//   newer read or write of the key has finished answers with that newer
//   value, never with what it read first;
// - other tabs: `followOtherTabs(store)` rehydrates a store when another
//   tab writes its key (a BroadcastChannel of key names, never values).
// This module never loads the WebAssembly binding itself: it takes any
// object with `get`, `set` and `remove` (a chatvault Kv, or a promise of one).

const MAP = "__chatvault_map__";
const SET = "__chatvault_set__";

/** JSON.stringify replacer that keeps Maps and Sets. */
export function replacer(_key, value) {
  if (value instanceof Map) return { [MAP]: [...value.entries()] };
  if (value instanceof Set) return { [SET]: [...value.values()] };
  return value;
}

/** JSON.parse reviver that restores what `replacer` tagged. */
export function reviver(_key, value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === MAP) return new Map(value[MAP]);
    if (keys.length === 1 && keys[0] === SET) return new Set(value[SET]);
  }
  return value;
}

function channelFor(namespace) {
  if (typeof BroadcastChannel !== "function") return null;
  const channel = new BroadcastChannel(`chatvault-kv:${namespace ?? ""}`);
  // Node (server rendering, tests) would otherwise stay alive for it.
  channel.unref?.();
  return channel;
}

/**
 * A zustand `PersistStorage` over a chatvault key-value namespace `kv` (or
 * a promise of one, e.g. `openKv("local", "my-app")`).
 */
export function chatvaultStorage(kv) {
  const ready = Promise.resolve(kv);
  // Per key: a counter of operations started; the newest write started
  // (its text: the state zustand already holds in memory); and the newest
  // read finished.
  const keys = new Map();
  const entry = (name) => {
    if (!keys.has(name)) keys.set(name, { started: 0, write: null, read: null });
    return keys.get(name);
  };
  let channel = null;
  const announce = (store, name) => {
    channel ??= channelFor(store.namespace);
    channel?.postMessage({ key: name });
  };
  const write = async (name, text, apply) => {
    const e = entry(name);
    e.write = { ticket: ++e.started, text };
    const store = await ready;
    await apply(store);
    announce(store, name);
  };

  return {
    async getItem(name) {
      const e = entry(name);
      const ticket = ++e.started;
      const text = await (await ready).get(name);
      // A write started after this read (the state in memory is newer than
      // what was read), or a newer read finished first: answer with that.
      let value = text;
      if (e.write && e.write.ticket > ticket) value = e.write.text;
      else if (e.read && e.read.ticket > ticket) value = e.read.text;
      else e.read = { ticket, text };
      return value === null || value === undefined ? null : JSON.parse(value, reviver);
    },

    setItem(name, value) {
      const text = JSON.stringify(value, replacer);
      return write(name, text, (store) => store.set(name, text));
    },

    removeItem(name) {
      return write(name, null, (store) => store.remove(name));
    },
  };
}

/**
 * Rehydrates `store` (a zustand store with `persist`) whenever another tab
 * writes its key in `namespace`. Returns the function that stops it.
 */
export function followOtherTabs(store, namespace) {
  const channel = channelFor(namespace);
  if (!channel) return () => {};
  const name = store.persist.getOptions().name;
  channel.onmessage = (event) => {
    if (event.data?.key === name) store.persist.rehydrate();
  };
  return () => channel.close();
}
