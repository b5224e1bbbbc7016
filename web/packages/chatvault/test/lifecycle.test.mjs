// Export and import in the browser: a Blob out, a File or Blob in, plain
// and encrypted, with progress; a truncated or wrongly unlocked file is a
// clear error that imports nothing; the same through a worker vault.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const suite = browserSuite();

test("an encrypted export imports into another vault whole, with progress, and holds no plaintext", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const source = await chatvault.openVault("export-source", { passphrase: pass });
    const conv = await source.createConversation("Lisbon in spring");
    await source.addMessages(
      conv.id,
      Array.from({ length: 500 }, (_, i) => ({ role: "user", content: `pastel de nata ${i}` })),
    );
    const exportProgress = [];
    const { blob, report } = await source.exportBlob({
      passphrase: "file passphrase",
      onProgress: (p) => exportProgress.push(p.phase),
    });
    const text = new TextDecoder("utf-8", { fatal: false }).decode(await blob.arrayBuffer());

    const target = await chatvault.openVault("export-target", { passphrase: "another vault" });
    const codes = [];
    for (const options of [{}, { passphrase: "not the file's" }]) {
      try {
        await target.importFrom(blob, options);
        codes.push("imported");
      } catch (e) {
        codes.push(e.code);
      }
    }
    const importProgress = [];
    const imported = await target.importFrom(new File([blob], "backup.cvx"), {
      passphrase: "file passphrase",
      onProgress: (p) => importProgress.push(p.phase),
    });
    const page = await target.messages(conv.id, { limit: 1000 });
    return {
      report,
      leaked: ["Lisbon", "pastel de nata"].filter((s) => text.includes(s)),
      exportPhases: [...new Set(exportProgress)],
      importPhases: [...new Set(importProgress)],
      codes,
      imported,
      title: (await target.conversation(conv.id)).title,
      messages: page.items.length,
    };
  }, PASS);
  assert.equal(outcome.report.encrypted, true);
  assert.deepEqual(outcome.report.counts, { conversations: 1, messages: 500, tombstones: 0 });
  assert.deepEqual(outcome.leaked, []);
  assert.deepEqual(outcome.codes, ["export_locked", "wrong_passphrase"]);
  assert.equal(outcome.imported.imported, 501);
  assert.equal(outcome.title, "Lisbon in spring");
  assert.equal(outcome.messages, 500);
  assert.deepEqual(outcome.exportPhases, ["exporting"]);
  assert.ok(outcome.importPhases.includes("importing"), JSON.stringify(outcome.importPhases));
});

test("a truncated export is refused and imports nothing", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async () => {
    const source = await chatvault.openVault("truncated-source");
    const conv = await source.createConversation("kept whole or not at all");
    await source.addMessages(conv.id, Array.from({ length: 50 }, (_, i) => ({ role: "user", content: `m${i}` })));
    const { blob } = await source.exportBlob();
    const target = await chatvault.openVault("truncated-target");
    let code;
    try {
      await target.importFrom(blob.slice(0, Math.floor(blob.size * 0.7)));
    } catch (e) {
      code = e instanceof chatvault.ChatvaultError ? e.code : String(e);
    }
    const stats = await target.stats();
    const whole = await target.importFrom(blob);
    return { code, after: [stats.conversations, stats.messages], whole: whole.imported };
  });
  assert.ok(outcome.code && outcome.code !== "imported", `refused with ${outcome.code}`);
  assert.deepEqual(outcome.after, [0, 0], "nothing of the truncated file was imported");
  assert.equal(outcome.whole, 51);
});

test("a worker vault exports and imports with progress reaching the page", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const source = await chatvault.openVault("worker-export", { passphrase: pass, worker: true });
    const conv = await source.createConversation("from a worker");
    await source.addMessages(conv.id, Array.from({ length: 300 }, (_, i) => ({ role: "user", content: `w${i}` })));
    const phases = [];
    const { blob, report } = await source.exportBlob({ onProgress: (p) => phases.push(p.phase) });
    const target = await chatvault.openVault("worker-import", { worker: true });
    const imported = await target.importFrom(blob, { onProgress: (p) => phases.push(p.phase) });
    source.lock();
    target.lock();
    return { isBlob: blob instanceof Blob, counts: report.counts, imported: imported.imported, phases: [...new Set(phases)] };
  }, PASS);
  assert.equal(outcome.isBlob, true);
  assert.deepEqual(outcome.counts, { conversations: 1, messages: 300, tombstones: 0 });
  assert.equal(outcome.imported, 301);
  assert.ok(outcome.phases.includes("exporting"), JSON.stringify(outcome.phases));
});

test("an export of several MiB streams out in parts, and back in through a worker in slices", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async () => {
    const source = await chatvault.openVault("export-large-source");
    const conv = await source.createConversation("long");
    const body = "x".repeat(1000);
    for (let batch = 0; batch < 6; batch++) {
      await source.addMessages(
        conv.id,
        Array.from({ length: 1000 }, (_, i) => ({ role: "user", content: `${batch}-${i} ${body}` })),
      );
    }
    const { blob, report } = await source.exportBlob();
    const target = await chatvault.openVault("export-large-target");
    const imported = await target.importFrom(blob);
    // The same vault exported twice gives the same records (a second
    // export of the target must carry exactly as many bytes of records).
    const again = await target.exportBlob();
    // A worker reads the File in slices as it imports; a truncated copy
    // is refused there too, with nothing imported.
    const worker = await chatvault.openVault("export-large-worker", { worker: true });
    let truncated;
    try {
      await worker.importFrom(new File([blob.slice(0, blob.size - 4096)], "cut.cvx"));
      truncated = "imported";
    } catch (e) {
      truncated = e.code;
    }
    const afterTruncated = (await worker.stats()).messages;
    const streamed = await worker.importFrom(new File([blob], "backup.cvx"));
    const workerLast = (await worker.messages(conv.id, { limit: 1 })).items[0].content;
    worker.lock();
    const first = new Set();
    let before;
    do {
      const page = await target.messages(conv.id, { limit: 1000, before });
      page.items.forEach((m) => first.add(m.content));
      before = page.nextCursor ?? undefined;
    } while (before);
    return {
      size: blob.size,
      reportBytes: report.bytes,
      counts: report.counts,
      imported: imported.imported,
      againCounts: again.report.counts,
      distinct: first.size,
      hasLast: first.has(`5-999 ${body}`),
      truncated,
      afterTruncated,
      streamed: streamed.imported,
      workerLast,
    };
  });
  assert.ok(outcome.size > 6 * 1024 * 1024, `a multi-part export (${outcome.size} bytes)`);
  assert.equal(outcome.size, outcome.reportBytes, "the Blob holds every byte the export wrote");
  assert.deepEqual(outcome.counts, { conversations: 1, messages: 6000, tombstones: 0 });
  assert.equal(outcome.imported, 6001);
  assert.deepEqual(outcome.againCounts, outcome.counts);
  assert.equal(outcome.distinct, 6000);
  assert.ok(outcome.hasLast);
  assert.notEqual(outcome.truncated, "imported");
  assert.equal(outcome.afterTruncated, 0, "a refused file imports nothing");
  assert.equal(outcome.streamed, 6001);
  assert.equal(outcome.workerLast, `5-999 ${"x".repeat(1000)}`);
  await page.close();
});

test("retention: a dry run deletes nothing, a run deletes what is older than the policy and tells the tabs", async () => {
  const page = await openPage(suite.context, suite.server.url);
  const outcome = await page.evaluate(async (pass) => {
    const vault = await chatvault.openVault("retention", { passphrase: pass });
    await vault.createConversation("this week");
    // A conversation last active 60 days ago, moved in from another app.
    const old = new Date(Date.now() - 60 * 86_400_000).toISOString();
    const file = JSON.stringify({
      conversations: [
        { id: "c1", title: "last spring", createdAt: old, updatedAt: old, messages: [{ id: "m1", role: "user", content: "hi", createdAt: old }] },
      ],
    });
    await vault.importFrom(new Blob([file]));
    const titles = async () => (await vault.conversations()).items.map((c) => c.title).sort();
    const changes = [];
    vault.subscribe((change) => changes.push(change));
    const dry = await vault.planRetention({ maxAgeDays: 30 });
    const afterDry = await titles();
    await vault.setRetentionPolicy({ maxAgeDays: 30 });
    const stored = await vault.retentionPolicy();
    const run = await vault.runRetention({ maxAgeDays: 30 });
    return { dry, afterDry, stored, run, after: await titles(), changes };
  }, PASS);
  assert.equal(outcome.dry.dryRun, true);
  assert.deepEqual(outcome.dry.delete.map((d) => d.reason), ["age"]);
  assert.equal(outcome.dry.remainingConversations, 1);
  assert.deepEqual(outcome.afterDry, ["last spring", "this week"]);
  assert.deepEqual(outcome.stored, { maxAgeDays: 30 });
  assert.equal(outcome.run.dryRun, false);
  assert.equal(outcome.run.delete.length, 1);
  assert.deepEqual(outcome.after, ["this week"]);
  const deleted = outcome.changes.find((c) => c.kind === "conversation" && c.op === "delete");
  assert.deepEqual(deleted?.ids, [outcome.run.delete[0].id]);
});
