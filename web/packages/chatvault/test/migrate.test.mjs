// Moving a vault between backends through the package (`migrateVault`,
// in a worker of its own): IndexedDB → SQLite on OPFS and back, encrypted,
// with its pending changes; a target that already holds the vault is
// refused; the source stays the vault until the copy is verified. Without
// the binding with SQLite (pkg-opfs/ not served) the move is refused with
// "unsupported" and the vault in IndexedDB is untouched.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const suite = browserSuite();

test("migrateVault moves an encrypted vault to OPFS with its pending changes and refuses an occupied target, or refuses without SQLite", async (t) => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const name = `migrate-${Date.now()}`;
    const codeOf = async (work) => {
      try {
        await work();
        return "no error";
      } catch (e) {
        return e instanceof chatvault.ChatvaultError ? e.code : `not a ChatvaultError: ${e}`;
      }
    };
    const summary = async (options) => {
      const vault = await chatvault.openVault(name, { passphrase: pass, worker: true, ...options });
      const [conversation] = (await vault.conversations()).items;
      const messages = await vault.messages(conversation.id, { limit: 1000 });
      const stats = await vault.stats();
      vault.lock();
      return {
        title: conversation.title,
        contents: messages.items.map((m) => m.content).join("|"),
        pending: stats.pendingChanges,
      };
    };
    const vault = await chatvault.openVault(name, { passphrase: pass, worker: true });
    const conv = await vault.createConversation("moving house");
    await vault.addMessages(
      conv.id,
      Array.from({ length: 700 }, (_, i) => ({ role: "user", content: `m${i}` })),
    );
    vault.lock();
    const before = await summary({});
    const sameBackend = await codeOf(() =>
      chatvault.migrateVault(name, { from: "indexeddb", to: "indexeddb", worker: true }),
    );
    const progress = [];
    let report = null;
    const first = await codeOf(async () => {
      report = await chatvault.migrateVault(name, {
        from: "indexeddb",
        to: "opfs-sqlite",
        worker: true,
        onProgress: (p) => progress.push(p),
      });
    });
    if (first === "unsupported") {
      return { sqlite: false, sameBackend, before, after: await summary({}) };
    }
    const onOpfs = await summary({ backend: "opfs-sqlite" });
    // The source is still there (no deleteSource): a move into it is
    // refused, and a refused move deletes nothing, deleteSource or not.
    const occupied = await codeOf(() =>
      chatvault.migrateVault(name, { from: "opfs-sqlite", to: "indexeddb", worker: true, deleteSource: true }),
    );
    const kept = await summary({ backend: "opfs-sqlite" });
    const deleted = await chatvault.migrateVault(`${name}-gone`, {
      from: "indexeddb",
      to: "opfs-sqlite",
      worker: true,
    }).catch((e) => e.code);
    return { sqlite: true, sameBackend, first, report, progress, before, onOpfs, occupied, kept, deleted };
  }, PASS);
  t.diagnostic(outcome.sqlite ? "binding with SQLite: the whole move" : "binding without SQLite: the refusal");
  assert.equal(outcome.sameBackend, "invalid");
  if (!outcome.sqlite) {
    assert.deepEqual(outcome.after, outcome.before, "the IndexedDB vault is untouched");
    return;
  }
  assert.equal(outcome.first, "no error");
  assert.equal(outcome.report.conversations, 1);
  assert.equal(outcome.report.messages, 700);
  assert.equal(outcome.report.pendingChanges, outcome.before.pending);
  assert.equal(outcome.report.sourceDeleted, false);
  assert.ok(outcome.progress.length > 0 && outcome.progress.every((p) => p.phase === "migrating"));
  assert.deepEqual(outcome.onOpfs, outcome.before, "the same vault and outbox on OPFS");
  assert.equal(outcome.occupied, "target_not_empty");
  assert.deepEqual(outcome.kept, outcome.before, "the refused move's source (deleteSource: true) is kept");
  assert.equal(outcome.deleted, "invalid", "a source without a vault is refused");
});

test("migrateVault with deleteSource deletes the source only after a verified copy, and the move back works", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const name = `migrate-back-${Date.now()}`;
    const vault = await chatvault.openVault(name, { passphrase: pass, worker: true });
    const conv = await vault.createConversation("round trip");
    await vault.addMessages(conv.id, [{ role: "user", content: "there" }, { role: "assistant", content: "and back" }]);
    vault.lock();
    try {
      await chatvault.migrateVault(name, { from: "indexeddb", to: "opfs-sqlite", worker: true, deleteSource: true });
    } catch (e) {
      return { sqlite: false, code: e.code, kept: (await indexedDB.databases()).some((d) => d.name === name) };
    }
    const afterFirst = (await indexedDB.databases()).some((d) => d.name === name);
    const back = await chatvault.migrateVault(name, {
      from: "opfs-sqlite",
      to: "indexeddb",
      worker: true,
      deleteSource: true,
    });
    const home = await chatvault.openVault(name, { passphrase: pass });
    const [c] = (await home.conversations()).items;
    const contents = (await home.messages(c.id)).items.map((m) => m.content);
    home.lock();
    return { sqlite: true, afterFirst, back, contents };
  }, PASS);
  if (!outcome.sqlite) {
    assert.equal(outcome.code, "unsupported");
    assert.equal(outcome.kept, true, "a refused move deletes nothing");
    return;
  }
  assert.equal(outcome.afterFirst, false, "the IndexedDB source was deleted after the copy");
  assert.equal(outcome.back.sourceDeleted, true);
  assert.deepEqual(outcome.contents, ["and back", "there"]);
});
