// The package in a real browser (headless Chromium): what a web app relies
// on — data survives a reload, errors carry stable codes, a tab closed in
// the middle of a write leaves all or nothing, and nothing readable is
// left in IndexedDB or localStorage.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const suite = browserSuite();

test("1,000 encrypted messages survive a reload and read back in order", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const conversationId = await page.evaluate(async (pass) => {
    const vault = await chatvault.openVault("reload", { passphrase: pass });
    const conv = await vault.createConversation("Trip ideas");
    const messages = Array.from({ length: 1000 }, (_, i) => ({
      role: i % 2 ? "assistant" : "user",
      content: `message number ${i}`,
    }));
    await vault.addMessages(conv.id, messages);
    vault.lock();
    return conv.id;
  }, PASS);

  await page.reload();
  await page.waitForFunction(() => window.chatvault !== undefined);
  const read = await page.evaluate(
    async ({ pass, conversationId }) => {
      const vault = await chatvault.openVault("reload", { passphrase: pass });
      const contents = [];
      let before;
      for (;;) {
        const page = await vault.messages(conversationId, { limit: 300, before });
        contents.push(...page.items.map((m) => m.content));
        if (!page.nextCursor) break;
        before = page.nextCursor;
      }
      const conv = await vault.conversation(conversationId);
      const stats = await vault.stats();
      return { contents, title: conv.title, stats };
    },
    { pass: PASS, conversationId },
  );
  assert.equal(read.title, "Trip ideas");
  assert.equal(read.contents.length, 1000);
  assert.deepEqual(
    read.contents,
    Array.from({ length: 1000 }, (_, i) => `message number ${999 - i}`),
    "newest first, every one",
  );
  assert.equal(read.stats.messages, 1000);
  assert.equal(read.stats.encrypted, true);
  assert.equal(typeof read.stats.storage.quota, "number");
  await page.close();
});

test("a wrong passphrase is a ChatvaultError with code wrong_passphrase, and harmless", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const vault = await chatvault.openVault("wrong-pass", { passphrase: pass });
    await vault.createConversation("kept");
    vault.lock();
    const failures = [];
    for (const options of [{ passphrase: "not it" }, {}]) {
      try {
        await chatvault.openVault("wrong-pass", options);
        failures.push("opened");
      } catch (e) {
        failures.push({
          isChatvaultError: e instanceof chatvault.ChatvaultError,
          code: e.code,
          message: e.message,
        });
      }
    }
    const again = await chatvault.openVault("wrong-pass", { passphrase: pass });
    const titles = (await again.conversations()).items.map((c) => c.title);
    return { failures, titles };
  }, PASS);
  assert.deepEqual(outcome.failures[0], {
    isChatvaultError: true,
    code: "wrong_passphrase",
    message: "wrong passphrase",
  });
  assert.equal(outcome.failures[1].code, "locked");
  assert.deepEqual(outcome.titles, ["kept"]);
  await page.close();
});

test("errors carry stable codes: not_found, invalid, locked", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const codes = await page.evaluate(async () => {
    const vault = await chatvault.openVault("codes");
    const code = async (work) => {
      try {
        await work();
        return "no error";
      } catch (e) {
        return e instanceof chatvault.ChatvaultError ? e.code : `not a ChatvaultError: ${e}`;
      }
    };
    const conv = await vault.createConversation("c");
    const result = {
      missing: await code(() => vault.conversation("0190f6a0-0000-7000-8000-000000000000")),
      badId: await code(() => vault.conversation("not-an-id")),
      badRole: await code(() => vault.addMessage(conv.id, { role: "robot", content: "x" })),
      badLimit: await code(() => vault.messages(conv.id, { limit: 0 })),
    };
    vault.lock();
    result.afterLock = await code(() => vault.conversations());
    return result;
  });
  assert.deepEqual(codes, {
    missing: "not_found",
    badId: "invalid",
    badRole: "invalid",
    badLimit: "invalid",
    afterLock: "locked",
  });
  await page.close();
});

test("a tab closed in the middle of a bulk write leaves all of it or none", async (t) => {
  const COUNT = 3000;
  // How long the whole write takes here, so the closes below land before,
  // inside and after it.
  const timer = await openPage(suite.context, suite.server.url);
  const took = await timer.evaluate(async (count) => {
    const { vault, conversationId, messages } = await prepareBulk("closed-mid-write-timing", count);
    const started = performance.now();
    await vault.addMessages(conversationId, messages);
    return performance.now() - started;
  }, COUNT);
  await timer.close();

  const kept = [];
  const moments = [0.2, 0.4, 0.6, 0.8, 0.95, 2].map((f) => Math.round(f * took));
  for (const [attempt, moment] of moments.entries()) {
    const name = `closed-mid-write-${attempt}`;
    const writer = await openPage(suite.context, suite.server.url);
    const conversationId = await writer.evaluate(
      async ({ name, count }) => {
        const { vault, conversationId, messages } = await prepareBulk(name, count);
        window.pending = vault.addMessages(conversationId, messages);
        return conversationId;
      },
      { name, count: COUNT },
    );
    await new Promise((resolve) => setTimeout(resolve, moment));
    await writer.close({ runBeforeUnload: false });

    const reader = await openPage(suite.context, suite.server.url);
    const count = await reader.evaluate(
      async ({ name, conversationId }) => {
        const vault = await chatvault.openVault(name);
        const stats = await vault.stats();
        const page = await vault.messages(conversationId, { limit: 1000 });
        return { stats: stats.messages, firstPage: page.items.length };
      },
      { name, conversationId },
    );
    assert.ok(
      count.stats === 0 || count.stats === COUNT,
      `closed after ${moment} ms of a ${Math.round(took)} ms write: ${count.stats} of ${COUNT} messages were kept`,
    );
    assert.equal(count.firstPage, Math.min(count.stats, 1000));
    kept.push(`${moment} ms: ${count.stats}`);
    await reader.close();
  }
  t.diagnostic(`the write takes ${Math.round(took)} ms; kept after a close at ${kept.join(", ")}`);
  assert.ok(kept.at(-1).endsWith(`: ${COUNT}`), "a close well after the write keeps all of it");
});

test("IndexedDB and localStorage hold no plaintext title, content or state of an encrypted vault", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const found = await page.evaluate(async (pass) => {
    const secrets = ["Zanzibar honeymoon plans", "the surprise is in the red box", "draft: call mum"];
    const vault = await chatvault.openVault("plaintext-scan", { passphrase: pass });
    const conv = await vault.createConversation({ title: secrets[0], metadata: { note: "meta-secret" } });
    await vault.addMessage(conv.id, { role: "user", content: secrets[1] });
    const kv = await vault.sealedKv("local", "scan-app");
    await kv.set("draft", secrets[2]);
    const readBack = await kv.get("draft");

    // Every value of every object store of the vault's database, raw.
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open("plaintext-scan");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    const decoder = new TextDecoder("utf-8", { fatal: false });
    const dump = (value) => {
      if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
        return decoder.decode(value);
      }
      if (value && typeof value === "object") {
        return Object.values(value).map(dump).join("|");
      }
      return String(value);
    };
    let everything = "";
    let values = 0;
    for (const store of db.objectStoreNames) {
      const rows = await new Promise((resolve, reject) => {
        const request = db.transaction(store).objectStore(store).getAll();
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      values += rows.length;
      everything += rows.map(dump).join("\n");
    }
    db.close();
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      everything += `\n${key}=${localStorage.getItem(key)}`;
    }
    const needles = [...secrets, "meta-secret", "Zanzibar", "surprise", "call mum"];
    return {
      values,
      leaked: needles.filter((n) => everything.includes(n)),
      readBack,
      sealedItem: everything.includes("chatvault:scan-app:draft=cv1:"),
    };
  }, PASS);
  assert.ok(found.values > 3, `the scan read ${found.values} stored values`);
  assert.deepEqual(found.leaked, []);
  assert.equal(found.readBack, "draft: call mum");
  assert.ok(found.sealedItem, "the sealed kv item is in localStorage, as ciphertext");
  await page.close();
});

test("key-value state: plain round trip, the size guard's code, and a second tab reads it", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async () => {
    const kv = await chatvault.openKv("local", "settings-app");
    await kv.set("theme", JSON.stringify({ mode: "dark" }));
    let tooLarge;
    try {
      await kv.set("theme", "x".repeat(600 * 1024));
    } catch (e) {
      tooLarge = e.code;
    }
    return { tooLarge, theme: await kv.get("theme"), keys: await kv.keys() };
  });
  assert.deepEqual(outcome, {
    tooLarge: "too_large",
    theme: JSON.stringify({ mode: "dark" }),
    keys: ["theme"],
  });
  const other = await openPage(suite.context, suite.server.url);
  const seen = await other.evaluate(async () => (await chatvault.openKv("local", "settings-app")).get("theme"));
  assert.equal(seen, JSON.stringify({ mode: "dark" }));
  await page.close();
  await other.close();
});
