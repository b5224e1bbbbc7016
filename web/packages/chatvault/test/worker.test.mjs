// The vault in a Web Worker (`openVault(name, { worker: true })`): the same
// API and errors as in the page, the same data, and the page's main thread
// free while the worker unlocks and writes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const suite = browserSuite();

test("a worker vault writes what the page vault reads, with the same errors", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const vault = await chatvault.openVault("worker-same", { passphrase: pass, worker: true });
    const heard = [];
    vault.subscribe((change) => heard.push(`${change.source} ${change.kind} ${change.op}`));
    const conv = await vault.createConversation("from the worker");
    const added = await vault.addMessages(
      conv.id,
      Array.from({ length: 200 }, (_, i) => ({ role: "user", content: `w${i}`, ...(i % 2 ? { metadata: { i } } : {}) })),
    );
    const kv = await vault.sealedKv("indexeddb", "worker-state");
    await kv.set("draft", "typed in a worker");
    const codes = [];
    for (const work of [
      () => vault.conversation("not-an-id"),
      () => chatvault.openVault("worker-same", { passphrase: "nope", worker: true }),
      () => vault.sealedKv("local", "no-web-storage-in-workers"),
    ]) {
      try {
        await work();
        codes.push("no error");
      } catch (e) {
        codes.push(e instanceof chatvault.ChatvaultError ? e.code : `not a ChatvaultError: ${e}`);
      }
    }
    vault.lock();
    let afterLock;
    try {
      await vault.conversations();
    } catch (e) {
      afterLock = e.code;
    }
    // The same data, opened in the page.
    const inPage = await chatvault.openVault("worker-same", { passphrase: pass });
    const messages = await inPage.messages(conv.id, { limit: 1000 });
    // The worker answered what the vault chose for each message; the page
    // put the rest together: the same messages the vault reads back.
    const sameAsRead = JSON.stringify(added) === JSON.stringify([...messages.items].reverse());
    const draft = await (await inPage.sealedKv("indexeddb", "worker-state")).get("draft");
    return { isWorker: vault instanceof chatvault.WorkerVault, heard, codes, afterLock, count: messages.items.length, draft, sameAsRead };
  }, PASS);
  assert.equal(outcome.isWorker, true);
  assert.deepEqual(outcome.heard, ["local conversation create", "local message create"]);
  assert.deepEqual(outcome.codes, ["invalid", "wrong_passphrase", "unavailable"]);
  assert.equal(outcome.afterLock, "locked");
  assert.equal(outcome.count, 200);
  assert.equal(outcome.draft, "typed in a worker");
  assert.equal(outcome.sameAsRead, true, "a bulk add answers the messages as stored");
  await page.close();
});

test("the opfs-sqlite backend: detected, chosen, and refused clearly without its binding", async () => {
  const attempt = (page, options) =>
    page.evaluate(async (options) => {
      try {
        const vault = await chatvault.openVault("backend-choice", options);
        const kind = vault instanceof chatvault.SharedVault ? "shared" : vault.constructor.name;
        vault.lock();
        return `opened ${kind}`;
      } catch (e) {
        return e instanceof chatvault.ChatvaultError ? `${e.code}: ${e.message}` : `not a ChatvaultError: ${e}`;
      }
    }, options);
  const page = await openPage(suite.context, suite.server.url);
  assert.equal(await page.evaluate(() => chatvault.opfsAvailable()), true, "Chromium has OPFS and workers");
  assert.equal(await attempt(page, { worker: true, backend: "opfs-sqlite" }), "opened shared");
  assert.equal(await attempt(page, { backend: "opfs-sqlite" }), "opened shared");
  assert.match(await attempt(page, { worker: true, backend: "floppy" }), /^invalid: .*backend "floppy"/);
  assert.equal(await attempt(page, { worker: true, backend: "indexeddb" }), "opened WorkerVault");
  await page.close();

  // A server without pkg-opfs/: the worker cannot fetch the SQLite binding.
  const context = await suite.browser.newContext();
  await context.route("**/pkg-opfs/**", (route) => route.fulfill({ status: 404, body: "" }));
  const bare = await openPage(context, suite.server.url);
  assert.match(
    await attempt(bare, { backend: "opfs-sqlite" }),
    /^unsupported: the SQLite\/OPFS binding did not load .*use backend "indexeddb"/,
  );
  await context.close();
});

test("unlocking and a bulk write in the worker leave the page's main thread free", async (t) => {
  const page = await openPage(suite.context, suite.server.url);
  const longTasks = await page.evaluate(async (pass) => {
    const measure = async (worker) => {
      const tasks = [];
      const observer = new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) tasks.push(Math.round(entry.duration));
      });
      observer.observe({ type: "longtask" });
      const name = worker ? "worker-free-w" : "worker-free-p";
      const vault = await chatvault.openVault(name, { passphrase: pass, worker });
      const conv = await vault.createConversation("bulk");
      await vault.addMessages(
        conv.id,
        Array.from({ length: 3000 }, (_, i) => ({ role: "user", content: `bulk ${i} `.repeat(20) })),
      );
      vault.lock();
      await new Promise((resolve) => setTimeout(resolve, 50));
      observer.disconnect();
      return tasks;
    };
    return { page: await measure(false), worker: await measure(true) };
  }, PASS);
  t.diagnostic(`main-thread long tasks (ms): in the page ${JSON.stringify(longTasks.page)}, in a worker ${JSON.stringify(longTasks.worker)}`);
  // A long task is the browser's own measure of a blocked main thread
  // (over 50 ms); the in-page run shows what the worker takes away.
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  assert.ok(longTasks.page.length > 0, "the in-page run blocks the page (the comparison is meaningful)");
  assert.ok(
    sum(longTasks.worker) < sum(longTasks.page),
    `the worker run blocks the page less: ${longTasks.worker} vs ${longTasks.page}`,
  );
  await page.close();
});
