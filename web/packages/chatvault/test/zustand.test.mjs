// zustand `persist` on chatvaultStorage, in Node with a key-value namespace
// whose reads take as long as a test says (the races need no browser):
// Maps and Sets round-trip, version/migrate/partialize/merge,
// onRehydrateStorage and skipHydration behave as zustand users expect, and racing rehydrations
// never apply stale state — which the same race does with a plain
// JSON storage, as the control test shows.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createStore } from "zustand/vanilla";
import { createJSONStorage, persist } from "zustand/middleware";
import { chatvaultStorage } from "../zustand.js";

/** A namespace in memory; `delays` lists how long each next get waits. */
function slowKv() {
  const data = new Map();
  const delays = [];
  return {
    namespace: "test",
    data,
    delays,
    async get(key) {
      const value = data.has(key) ? data.get(key) : null;
      await new Promise((resolve) => setTimeout(resolve, delays.shift() ?? 0));
      return value;
    },
    async set(key, value) {
      data.set(key, value);
    },
    async remove(key) {
      data.delete(key);
    },
  };
}

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("Maps and Sets survive persist and rehydrate", async () => {
  const kv = slowKv();
  const options = { name: "rich", storage: chatvaultStorage(kv) };
  const make = () =>
    createStore(persist(() => ({ drafts: new Map(), pinned: new Set(), count: 0 }), options));
  const first = make();
  await first.persist.rehydrate();
  first.setState({ drafts: new Map([["c1", "hello"]]), pinned: new Set(["c1", "c2"]), count: 2 });
  await tick(5);
  const second = make();
  await second.persist.rehydrate();
  const state = second.getState();
  assert.ok(state.drafts instanceof Map && state.pinned instanceof Set);
  assert.deepEqual([...state.drafts], [["c1", "hello"]]);
  assert.deepEqual([...state.pinned], ["c1", "c2"]);
  assert.equal(state.count, 2);
});

test("version, migrate, partialize, merge and skipHydration work as in zustand", async () => {
  const kv = slowKv();
  kv.data.set("settings", JSON.stringify({ state: { theme: "dark" }, version: 1 }));
  const migrated = [];
  const store = createStore(
    persist(() => ({ theme: "light", fontSize: 14, secret: "not persisted" }), {
      name: "settings",
      storage: chatvaultStorage(kv),
      version: 2,
      migrate: (state, version) => {
        migrated.push(version);
        return { ...state, fontSize: 16 };
      },
      partialize: ({ theme, fontSize }) => ({ theme, fontSize }),
      merge: (persisted, current) => ({ ...current, ...persisted }),
      skipHydration: true,
    }),
  );
  assert.equal(store.getState().theme, "light", "nothing read before rehydrate()");
  assert.equal(store.persist.hasHydrated(), false);
  await store.persist.rehydrate();
  assert.deepEqual(migrated, [1]);
  assert.equal(store.getState().theme, "dark");
  assert.equal(store.getState().fontSize, 16);
  assert.equal(store.getState().secret, "not persisted");
  store.setState({ fontSize: 18 });
  await tick(5);
  assert.deepEqual(JSON.parse(kv.data.get("settings")), { state: { theme: "dark", fontSize: 18 }, version: 2 });
});

test("onRehydrateStorage hears the start and the end of every rehydration, with the state or the error", async () => {
  const kv = slowKv();
  kv.data.set("prefs", JSON.stringify({ state: { theme: "dark" }, version: 0 }));
  const events = [];
  const store = createStore(
    persist(() => ({ theme: "light" }), {
      name: "prefs",
      storage: chatvaultStorage(kv),
      skipHydration: true,
      onRehydrateStorage: (before) => {
        events.push(`start ${before.theme}`);
        return (state, error) => events.push(error ? `failed ${error.message}` : `done ${state.theme}`);
      },
    }),
  );
  await store.persist.rehydrate();
  assert.equal(store.persist.hasHydrated(), true);
  // A damaged stored value: the error reaches the callback, the state stays.
  kv.data.set("prefs", "{ not json");
  await store.persist.rehydrate();
  assert.equal(events[0], "start light");
  assert.equal(events[1], "done dark");
  assert.equal(events[2], "start dark");
  assert.match(events[3], /^failed /);
  assert.equal(store.getState().theme, "dark");
});

/**
 * The race: a slow rehydrate reads the old state; meanwhile the app sets
 * new state (persisted); the slow read then resolves. Returns the state
 * the store ends with.
 */
async function race(storageFor) {
  const kv = slowKv();
  kv.data.set("chat", JSON.stringify({ state: { draft: "old" }, version: 0 }));
  const store = createStore(
    persist(() => ({ draft: "" }), { name: "chat", storage: storageFor(kv), skipHydration: true }),
  );
  kv.delays.push(50); // the first read is slow
  const slow = store.persist.rehydrate();
  await tick(5);
  store.setState({ draft: "new" }); // written while the slow read is out
  await slow;
  await tick(5);
  return { memory: store.getState().draft, stored: JSON.parse(kv.data.get("chat")).state.draft };
}

test("a rehydrate racing a write never applies the stale state it read", async () => {
  assert.deepEqual(await race((kv) => chatvaultStorage(kv)), { memory: "new", stored: "new" });
});

test("control: the same race with a plain JSON storage applies the stale state", async () => {
  const plain = (kv) =>
    createJSONStorage(() => ({
      getItem: (k) => kv.get(k),
      setItem: (k, v) => kv.set(k, v),
      removeItem: (k) => kv.remove(k),
    }));
  assert.deepEqual(await race(plain), { memory: "old", stored: "new" });
});

test("two racing rehydrations end on the newest stored state", async () => {
  const kv = slowKv();
  kv.data.set("chat", JSON.stringify({ state: { draft: "v1" }, version: 0 }));
  const store = createStore(
    persist(() => ({ draft: "" }), { name: "chat", storage: chatvaultStorage(kv), skipHydration: true }),
  );
  kv.delays.push(60, 0);
  const slow = store.persist.rehydrate(); // reads v1, answers late
  await tick(5);
  kv.data.set("chat", JSON.stringify({ state: { draft: "v2" }, version: 0 })); // another tab wrote
  const fast = store.persist.rehydrate(); // reads v2, answers first
  await Promise.all([slow, fast]);
  assert.equal(store.getState().draft, "v2");
});
