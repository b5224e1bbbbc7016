// Several tabs on one vault: each tab hears the others' writes without a
// reload, concurrent writes from two tabs all commit with distinct stamps,
// and a data-key rotation in one tab locks the others (their keys are
// stale) instead of letting them write with the old key.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const suite = browserSuite();

/** Opens `name` in a new tab, keeping every change it hears in `window.heard`. */
async function tab(name, options = {}) {
  const page = await openPage(suite.context, suite.server.url);
  await page.evaluate(
    async ({ name, options }) => {
      window.vault = await chatvault.openVault(name, options);
      window.heard = [];
      window.vault.subscribe((change) => window.heard.push(change));
    },
    { name, options },
  );
  return page;
}

test("a tab hears another tab's writes and reads them without a reload", async () => {
  const a = await tab("tabs-hear", { passphrase: PASS });
  const b = await tab("tabs-hear", { passphrase: PASS });
  const conversationId = await a.evaluate(async () => {
    const conv = await vault.createConversation("shared");
    await vault.addMessage(conv.id, { role: "user", content: "from tab A" });
    return conv.id;
  });
  await b.waitForFunction(() => window.heard.length >= 2);
  const onB = await b.evaluate(async (conversationId) => {
    const page = await vault.messages(conversationId);
    return { heard: window.heard, contents: page.items.map((m) => m.content) };
  }, conversationId);
  assert.deepEqual(
    onB.heard.map((c) => [c.source, c.kind, c.op, c.conversationId]),
    [
      ["tab", "conversation", "create", conversationId],
      ["tab", "message", "create", conversationId],
    ],
  );
  assert.deepEqual(onB.contents, ["from tab A"]);
  const onA = await a.evaluate(() => window.heard.map((c) => c.source));
  assert.deepEqual(onA, ["local", "local"], "a tab hears its own writes as local");
  await a.close();
  await b.close();
});

test("two tabs writing at once: every write commits, no two share a stamp", async () => {
  const a = await tab("tabs-race");
  const conversationId = await a.evaluate(async () => (await vault.createConversation("race")).id);
  const b = await tab("tabs-race");
  const write = async ({ who, conversationId }) => {
    for (let i = 0; i < 60; i++) {
      await vault.addMessage(conversationId, { role: "user", content: `${who} ${i}` });
    }
  };
  await Promise.all([
    a.evaluate(write, { who: "A", conversationId }),
    b.evaluate(write, { who: "B", conversationId }),
  ]);
  const all = await a.evaluate(async (conversationId) => {
    const page = await vault.messages(conversationId, { limit: 1000 });
    return page.items.map((m) => ({ content: m.content, version: m.version }));
  }, conversationId);
  assert.equal(all.length, 120);
  assert.equal(new Set(all.map((m) => m.content)).size, 120);
  assert.equal(new Set(all.map((m) => m.version)).size, 120, "every stamp is unique");
  await a.close();
  await b.close();
});

test("a key rotation in one tab locks the others, which unlock again", async () => {
  const a = await tab("tabs-rotate", { passphrase: PASS });
  const b = await tab("tabs-rotate", { passphrase: PASS });
  await a.evaluate(async (pass) => {
    await vault.createConversation("before");
    await vault.rotateDataKey(pass);
    await vault.createConversation("after rotation");
  }, PASS);
  await b.waitForFunction(() => window.heard.some((c) => c.kind === "key"));
  const onB = await b.evaluate(async (pass) => {
    let code;
    try {
      await vault.conversations();
    } catch (e) {
      code = e.code;
    }
    const again = await chatvault.openVault("tabs-rotate", { passphrase: pass });
    const titles = (await again.conversations()).items.map((c) => c.title).sort();
    return { code, titles };
  }, PASS);
  assert.equal(onB.code, "locked");
  assert.deepEqual(onB.titles, ["after rotation", "before"]);
  await a.close();
  await b.close();
});
