// The SQLite/OPFS backend shared by tabs (shared.js): one tab's worker
// holds the database and serves the others; when that tab closes in the
// middle of their writes, another tab takes over and every write lands
// exactly once.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const suite = browserSuite();

/** Opens `name` on SQLite/OPFS in a new tab, keeping what it hears in `window.heard`. */
async function tab(name, options = { passphrase: PASS }) {
  const page = await openPage(suite.context, suite.server.url);
  await page.evaluate(
    async ({ name, options }) => {
      window.vault = await chatvault.openVault(name, { ...options, backend: "opfs-sqlite" });
      window.heard = [];
      window.vault.subscribe((change) => window.heard.push(change));
    },
    { name, options },
  );
  return page;
}

/** Counts in `page`'s `window.requests` the calls other tabs send over vault `name`'s channel. */
function countRequests(page, name) {
  return page.evaluate((name) => {
    window.requests = 0;
    const spy = new BroadcastChannel(`chatvault-opfs:${name}`);
    spy.onmessage = (event) => {
      if (event.data?.type === "request") window.requests += 1;
    };
  }, name);
}

test("tabs share one SQLite/OPFS vault: the first leads, the others are served", async () => {
  const a = await tab("shared-basic");
  const b = await tab("shared-basic");
  const roles = [await a.evaluate(() => vault.isLeader), await b.evaluate(() => vault.isLeader)];
  assert.deepEqual(roles, [true, false], "the first tab's worker holds the database");

  const conversationId = await b.evaluate(async () => {
    const conv = await vault.createConversation("asked from tab B");
    await vault.addMessages(
      conv.id,
      Array.from({ length: 20 }, (_, i) => ({ role: "user", content: `b${i}` })),
    );
    const kv = await vault.sealedKv("indexeddb", "drafts");
    await kv.set("draft", "typed in B");
    return conv.id;
  });
  await a.waitForFunction(() => window.heard.length >= 2);
  const onA = await a.evaluate(async (id) => {
    const page = await vault.messages(id, { limit: 100 });
    const draft = await (await vault.sealedKv("indexeddb", "drafts")).get("draft");
    return { heard: window.heard.map((c) => `${c.source} ${c.kind} ${c.op}`), count: page.items.length, draft };
  }, conversationId);
  assert.deepEqual(onA.heard, ["tab conversation create", "tab message create"], "B asked, A's worker wrote");
  assert.equal(onA.count, 20);
  assert.equal(onA.draft, "typed in B");
  await b.waitForFunction(() => window.heard.length >= 2);
  const heardOnB = await b.evaluate(() => window.heard.map((c) => c.source));
  assert.deepEqual(heardOnB, ["local", "local"], "a tab hears what it asked for as local");
  // And the other way round: the leader's own write is "tab" in B.
  await a.evaluate(async (id) => vault.renameConversation(id, "renamed in A"), conversationId);
  await b.waitForFunction(() => window.heard.length >= 3);
  const last = await b.evaluate(() => window.heard.at(-1));
  assert.deepEqual([last.source, last.op], ["tab", "update"]);

  // The leader checks a joining tab's passphrase: a wrong one opens nothing.
  const codes = await b.evaluate(async () => {
    const codes = [];
    for (const options of [{ passphrase: "wrong" }, {}]) {
      try {
        await chatvault.openVault("shared-basic", { ...options, backend: "opfs-sqlite" });
        codes.push("opened");
      } catch (e) {
        codes.push(e.code);
      }
    }
    return codes;
  });
  assert.deepEqual(codes, ["wrong_passphrase", "locked"]);
  await a.close();
  await b.close();
});

test("the leader tab closes mid-write: another takes over and every write lands once", async () => {
  const name = "shared-handover";
  const a = await tab(name);
  const conversationId = await a.evaluate(async () => (await vault.createConversation("handover")).id);
  const b = await tab(name);
  const c = await tab(name);
  // Tab A notes each call the others send it, to close in the middle of one.
  await countRequests(a, name);
  const writeLoop = async ({ who, conversationId, count }) => {
    window.written = 0;
    window.loop = (async () => {
      for (let i = 0; i < count; i++) {
        await vault.addMessage(conversationId, { role: "user", content: `${who} ${i}` });
        window.written = i + 1;
      }
    })();
  };
  await b.evaluate(writeLoop, { who: "B", conversationId, count: 120 });
  await c.evaluate(writeLoop, { who: "C", conversationId, count: 120 });
  // And one bulk write from B, in flight when A closes.
  await b.waitForFunction(() => window.written >= 20);
  const before = await a.evaluate(() => window.requests);
  await b.evaluate(({ conversationId }) => {
    window.bulk = vault.addMessages(
      conversationId,
      Array.from({ length: 2000 }, (_, i) => ({ role: "assistant", content: `bulk ${i}` })),
    );
  }, { conversationId });
  await a.waitForFunction((before) => window.requests > before + 2, before);
  await a.close();

  const outcome = await b.evaluate(async () => {
    await window.loop;
    const bulk = await window.bulk;
    return { bulk: bulk.length, leader: vault.isLeader };
  });
  await c.evaluate(() => window.loop);
  const cLeads = await c.evaluate(() => vault.isLeader);
  assert.equal(outcome.bulk, 2000);
  assert.ok(outcome.leader !== cLeads, "exactly one of the remaining tabs leads");

  const all = await c.evaluate(async (conversationId) => {
    const items = [];
    let before;
    do {
      const page = await vault.messages(conversationId, { limit: 500, before });
      items.push(...page.items);
      before = page.nextCursor;
    } while (before);
    return items.map((m) => ({ id: m.id, content: m.content }));
  }, conversationId);
  const contents = all.map((m) => m.content);
  const expected = [
    ...Array.from({ length: 120 }, (_, i) => `B ${i}`),
    ...Array.from({ length: 120 }, (_, i) => `C ${i}`),
    ...Array.from({ length: 2000 }, (_, i) => `bulk ${i}`),
  ];
  assert.equal(new Set(all.map((m) => m.id)).size, all.length, "no message twice");
  assert.deepEqual([...contents].sort(), [...expected].sort(), "every write, once");
  const stats = await b.evaluate(() => vault.stats());
  assert.equal(stats.messages, expected.length);
  await b.close();
  await c.close();
});

test("a passphrase change in flight when the leader closes is reported, not sent again", async () => {
  const name = "shared-not-again";
  const a = await tab(name);
  const b = await tab(name);
  await countRequests(a, name);
  // The key derivation keeps A's worker busy for a while: A closes during it.
  await b.evaluate((pass) => {
    window.change = vault.changePassphrase(pass, "a new passphrase").then(
      () => "done",
      (e) => e.code,
    );
  }, PASS);
  await a.waitForFunction(() => window.requests > 0);
  await a.close();
  const outcome = await b.evaluate(async ({ name, pass }) => {
    const change = await window.change;
    // Whichever passphrase holds now, the vault opens with it and nothing
    // was done twice.
    for (const passphrase of [pass, "a new passphrase"]) {
      try {
        const again = await chatvault.openVault(name, { passphrase, backend: "opfs-sqlite" });
        await again.conversations();
        return { change, opensWith: passphrase === pass ? "old" : "new", leader: vault.isLeader };
      } catch (e) {
        if (e.code !== "wrong_passphrase") throw e;
      }
    }
    return { change, opensWith: "neither" };
  }, { name, pass: PASS });
  assert.equal(outcome.change, "unavailable");
  assert.ok(["old", "new"].includes(outcome.opensWith), JSON.stringify(outcome));
  await b.close();
});

test("after a passphrase change, a tab with the old one cannot take over: it locks and the next tab does", async () => {
  const name = "shared-new-passphrase";
  const a = await tab(name);
  const b = await tab(name);
  const c = await tab(name);
  await c.evaluate(async (pass) => {
    await vault.changePassphrase(pass, "the new passphrase");
    await vault.createConversation("written with the new passphrase");
  }, PASS);
  // B is next in the lock's queue but holds the old passphrase.
  await a.close();
  await c.waitForFunction(() => window.vault.isLeader, null, { timeout: 20_000 });
  const onB = await b.evaluate(async (name) => {
    let code;
    try {
      await vault.conversations();
      code = "answered";
    } catch (e) {
      code = e.code;
    }
    const again = await chatvault.openVault(name, { passphrase: "the new passphrase", backend: "opfs-sqlite" });
    const titles = (await again.conversations()).items.map((c) => c.title);
    return { code, leader: again.isLeader, titles };
  }, name);
  assert.deepEqual(onB, { code: "locked", leader: false, titles: ["written with the new passphrase"] });
  await b.close();
  await c.close();
});
