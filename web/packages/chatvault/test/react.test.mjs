// `chatvault/react` in headless Chromium with real React and a real vault:
// usePersistence's optimistic writes (fast successive updates, a set
// before the first read, failing writes retried, versions migrated, Maps),
// live conversation and message lists following this tab, other tabs and
// sync, and useSyncStatus.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { browserSuite } from "./harness.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const suite = browserSuite();

before(async () => {
  await build({
    entryPoints: [`${here}react-app.jsx`],
    outfile: `${here}react-bundle.js`,
    bundle: true,
    format: "esm",
    jsx: "automatic",
    logLevel: "warning",
    define: { "process.env.NODE_ENV": '"development"' },
    plugins: [
      {
        // The package's own modules load from the package root, once, as
        // in an app (one ChatvaultError class, one binding).
        name: "package-modules-external",
        setup(b) {
          b.onResolve({ filter: /^\.\.?\/(index|internal|zustand|sync)\.js$/ }, (args) => ({
            path: `/${args.path.replace(/^.*\//, "")}`,
            external: true,
          }));
        },
      },
    ],
  });
});

async function reactPage() {
  const page = await suite.context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(suite.server.url.replace("page.html", "react.html"));
  await page.waitForFunction(() => window.ready === true);
  return page;
}

test("usePersistence: fast successive updates all land, the newest last, and survive a reload", async () => {
  const page = await reactPage();
  await page.evaluate(() => mountPersisted("counter", "counter", 0));
  // 200 functional updates in one go, some before the first read finished.
  await page.evaluate(() => {
    for (let i = 0; i < 200; i++) window.seen.counter.setValue((n) => n + 1);
  });
  await page.waitForFunction(() => window.seen.counter.value === 200 && !window.seen.counter.loading);
  const stored = await page.evaluate(async () => {
    const kv = await chatvault.openKv("local", "chatvault-react");
    for (let i = 0; i < 50; i++) {
      const text = await kv.get("counter");
      if (text && JSON.parse(text).value === 200) return JSON.parse(text);
      await new Promise((r) => setTimeout(r, 50));
    }
    return JSON.parse(await kv.get("counter"));
  });
  assert.deepEqual(stored, { version: 0, value: 200 });

  await page.reload();
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(() => mountPersisted("counter", "counter", -1));
  await page.waitForFunction(() => !window.seen.counter.loading);
  assert.equal(await page.evaluate(() => window.seen.counter.value), 200);
  await page.close();
});

test("usePersistence: a set made while loading wins over the stored value; Maps round-trip; versions migrate", async () => {
  const page = await reactPage();
  const outcome = await page.evaluate(async () => {
    const kv = await chatvault.openKv("local", "chatvault-react");
    await kv.set("early", JSON.stringify({ version: 0, value: "stored long ago" }));
    await kv.set("old-shape", JSON.stringify({ version: 1, value: { name: "Ada" } }));
    // A storage whose reads are slow: the set lands while it loads.
    const slow = {
      get: async (key) => {
        await new Promise((r) => setTimeout(r, 300));
        return kv.get(key);
      },
      set: (key, value) => kv.set(key, value),
      remove: (key) => kv.remove(key),
    };
    mountPersisted("early", "early", "initial", { storage: slow });
    while (!window.seen.early) await new Promise((r) => setTimeout(r, 5));
    const loadingWhenSet = window.seen.early.loading;
    window.seen.early.setValue("typed while loading");
    mountPersisted("map", "drafts", new Map());
    mountPersisted("migrated", "old-shape", { fullName: "" }, {
      version: 2,
      migrate: (old, from) => ({ fullName: `${old.name} (from v${from})` }),
    });
    await new Promise((r) => setTimeout(r, 600));
    window.seen.map.setValue((m) => new Map(m).set("conversation-1", "half a thought"));
    await new Promise((r) => setTimeout(r, 300));
    return {
      loadingWhenSet,
      early: window.seen.early.value,
      earlyStored: JSON.parse(await kv.get("early")).value,
      migrated: window.seen.migrated.value,
      mapStored: await kv.get("drafts"),
    };
  });
  assert.equal(outcome.loadingWhenSet, true);
  assert.equal(outcome.early, "typed while loading");
  assert.equal(outcome.earlyStored, "typed while loading");
  assert.deepEqual(outcome.migrated, { fullName: "Ada (from v1)" });
  await page.evaluate(() => mountPersisted("map2", "drafts", new Map()));
  await page.waitForFunction(() => window.seen.map2 && !window.seen.map2.loading);
  const map = await page.evaluate(() => {
    const value = window.seen.map2.value;
    return { isMap: value instanceof Map, entry: value.get("conversation-1") };
  });
  assert.deepEqual(map, { isMap: true, entry: "half a thought" }, outcome.mapStored);
  await page.close();
});

test("usePersistence: a failing write shows in error, is retried, and the newest value lands", async () => {
  const page = await reactPage();
  const outcome = await page.evaluate(async () => {
    const kv = await chatvault.openKv("session", "flaky");
    let failures = 2;
    const flaky = {
      get: (key) => kv.get(key),
      set: async (key, value) => {
        if (failures > 0) {
          failures--;
          throw new chatvault.ChatvaultError("storage_full", "the disk is full (simulated)");
        }
        return kv.set(key, value);
      },
      remove: (key) => kv.remove(key),
    };
    mountPersisted("flaky", "note", "", { storage: flaky });
    await new Promise((r) => setTimeout(r, 100));
    window.seen.flaky.setValue("first");
    await new Promise((r) => setTimeout(r, 50));
    const errorSeen = window.seen.flaky.error?.code ?? null;
    window.seen.flaky.setValue("second");
    for (let i = 0; i < 100 && (window.seen.flaky.error || JSON.parse((await kv.get("note")) ?? "null")?.value !== "second"); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    return { errorSeen, errorAfter: window.seen.flaky.error, stored: JSON.parse(await kv.get("note")).value };
  });
  assert.equal(outcome.errorSeen, "storage_full");
  assert.equal(outcome.errorAfter, null);
  assert.equal(outcome.stored, "second");
  await page.close();
});

test("useConversations and useMessages follow writes from this tab and another, page back, and search", async () => {
  const page = await reactPage();
  const other = await reactPage();
  const conversationId = await page.evaluate(async () => {
    window.vault = await chatvault.openVault("react-lists", { passphrase: "react lists" });
    const conv = await vault.createConversation("Lisbon");
    await vault.createConversation("Porto");
    await vault.addMessages(conv.id, Array.from({ length: 30 }, (_, i) => ({ role: "user", content: `m${i}` })));
    mountLists({ vault, conversationId: conv.id, pageSize: 10 });
    return conv.id;
  });
  await page.waitForFunction(() => window.seen.lists && !window.seen.lists.messages.loading && !window.seen.lists.conversations.loading);
  let lists = await page.evaluate(() => ({
    titles: window.seen.lists.conversations.items.map((c) => c.title),
    messages: window.seen.lists.messages.items.map((m) => m.content),
    hasOlder: window.seen.lists.messages.hasOlder,
  }));
  assert.deepEqual(lists.titles, ["Lisbon", "Porto"], "most recent activity first (Lisbon's messages)");
  assert.deepEqual(lists.messages, Array.from({ length: 10 }, (_, i) => `m${20 + i}`), "the newest page, oldest first");
  assert.equal(lists.hasOlder, true);

  await page.evaluate(() => window.seen.lists.messages.loadOlder());
  await page.waitForFunction(() => window.seen.lists.messages.items.length === 20);

  // Another tab writes: this tab's lists follow without a reload.
  await other.evaluate(async (id) => {
    const vault = await chatvault.openVault("react-lists", { passphrase: "react lists" });
    await vault.addMessage(id, { role: "assistant", content: "from the other tab" });
    await vault.createConversation("Faro");
  }, conversationId);
  await page.waitForFunction(
    () =>
      window.seen.lists.messages.items.at(-1)?.content === "from the other tab" &&
      window.seen.lists.conversations.items[0]?.title === "Faro",
  );
  lists = await page.evaluate(() => window.seen.lists.messages.items.length);
  assert.equal(lists, 21, "the pages already shown stay shown");

  // This tab deletes; search filters by title.
  await page.evaluate(async () => {
    const faro = window.seen.lists.conversations.items[0];
    await vault.deleteConversation(faro.id);
  });
  await page.waitForFunction(() => window.seen.lists.conversations.items.length === 2);
  await page.evaluate((id) => {
    unmount("lists");
    mountLists({ vault, conversationId: id, pageSize: 10, search: "lis" });
  }, conversationId);
  await page.waitForFunction(
    () => !window.seen.lists.conversations.loading && window.seen.lists.conversations.items.length === 1,
  );
  assert.equal(await page.evaluate(() => window.seen.lists.conversations.items[0].title), "Lisbon");
  await page.close();
  await other.close();
});

test("useSyncStatus follows a sync's status, and is null without one", async () => {
  const page = await reactPage();
  const seen = await page.evaluate(async () => {
    const listeners = new Set();
    const sync = {
      status: Object.freeze({ role: "leader", state: "idle", pending: 0 }),
      subscribe(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
    };
    mountStatus(sync);
    await new Promise((r) => setTimeout(r, 50));
    const first = window.seen.status;
    sync.status = Object.freeze({ role: "leader", state: "offline", pending: 3 });
    listeners.forEach((l) => l(sync.status));
    await new Promise((r) => setTimeout(r, 50));
    const second = window.seen.status;
    unmount("status");
    mountStatus(null);
    await new Promise((r) => setTimeout(r, 50));
    return { first, second, none: window.seen.status, listeners: listeners.size };
  });
  assert.deepEqual(seen.first, { role: "leader", state: "idle", pending: 0 });
  assert.deepEqual(seen.second, { role: "leader", state: "offline", pending: 3 });
  assert.equal(seen.none, null);
  assert.equal(seen.listeners, 0, "unmounting unsubscribes");
  await page.close();
});
