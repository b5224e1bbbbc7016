// Browser figures for BENCHMARKS.md, each against a baseline measured in
// the same page in the same run (headless Chromium, playwright-core):
// - write 10,000 × 1 KiB messages through the wasm vault (encrypted, and
//   plaintext) in one call, against a plain-JS IndexedDB `put` loop of the
//   same rows in one transaction, with an index shaped like the store's;
// - the same rows through Dexie's `bulkPut` (npm `dexie`, loaded into the
//   page from node_modules), one transaction, `strict` durability like the
//   loop: what a popular IndexedDB wrapper costs for the same work;
// - read the latest 50 messages of a conversation through the vault against
//   the same raw index query (`getAll(range, 50)`);
// - unlock (Argon2id at the defaults) in the page; the native figure comes
//   from the caller (`cargo xtask bench --browser` runs both);
// - the two backends side by side, each in a dedicated worker (`worker:
//   true`, where SQLite on OPFS must run): 10,000 encrypted 1 KiB messages
//   in one `addMessages` call and the latest 50, on IndexedDB and on
//   "opfs-sqlite". Timed from the page, so both include the same
//   postMessage round trip. `null` when the binding has no SQLite
//   (chatvault-wasm built without its `opfs` feature).
// Prints one JSON object on stdout. Run by `cargo xtask bench --browser`
// (which builds the release package with SQLite on OPFS first).

import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_OPTIONS, openPage, serve } from "../test/harness.mjs";

const N = 10_000;
const READS = 30;
const server = await serve();
// A fresh profile on disk, as a user's browser has: a `newContext()` is
// off the record, and Chromium keeps an off-the-record origin's OPFS in
// memory, where a growing file gets slower with every write (10,000
// messages on SQLite/OPFS took 6–9 s there against ~1.5 s on disk).
const profile = mkdtempSync(join(tmpdir(), "chatvault-bench-"));
const context = await chromium.launchPersistentContext(profile, CHROMIUM_OPTIONS);
try {
  const page = await openPage(context, server.url);
  // Dexie's UMD build defines `Dexie` on the page.
  await page.addScriptTag({ path: createRequire(import.meta.url).resolve("dexie") });
  const figures = await page.evaluate(
    async ({ N, READS }) => {
      const content = "x".repeat(1024);
      const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      const time = async (work) => {
        const started = performance.now();
        await work();
        return performance.now() - started;
      };
      const request = (r) =>
        new Promise((resolve, reject) => {
          r.onsuccess = () => resolve(r.result);
          r.onerror = () => reject(r.error);
        });

      // Baseline: a plain-JS IndexedDB loop, one transaction, 1 KiB bodies.
      const db = await new Promise((resolve, reject) => {
        const open = indexedDB.open("bench-raw", 1);
        open.onupgradeneeded = () => {
          const store = open.result.createObjectStore("messages", { keyPath: "id" });
          store.createIndex("latest", ["conv", "negCreated", "id"]);
        };
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      const body = new TextEncoder().encode(content);
      const raw = await time(
        () =>
          new Promise((resolve, reject) => {
            const tx = db.transaction("messages", "readwrite", { durability: "strict" });
            const store = tx.objectStore("messages");
            for (let i = 0; i < N; i++) {
              const id = String(i).padStart(8, "0");
              store.put({ id, conv: "c1", negCreated: -i, created: i, body });
            }
            tx.oncomplete = resolve;
            tx.onerror = () => reject(tx.error);
          }),
      );
      const rawReads = [];
      for (let i = 0; i < READS; i++) {
        rawReads.push(
          await time(async () => {
            const index = db.transaction("messages").objectStore("messages").index("latest");
            const range = IDBKeyRange.bound(["c1"], ["c1", []]);
            const rows = await request(index.getAll(range, 50));
            if (rows.length !== 50) throw new Error("raw read");
          }),
        );
      }
      db.close();

      // Dexie: the same rows and index, one bulkPut (one transaction).
      const dexie = new Dexie("bench-dexie", { chromeTransactionDurability: "strict" });
      dexie.version(1).stores({ messages: "id, [conv+negCreated+id]" });
      await dexie.open();
      const rows = Array.from({ length: N }, (_, i) => {
        const id = String(i).padStart(8, "0");
        return { id, conv: "c1", negCreated: -i, created: i, body };
      });
      const dexieWrite = await time(() => dexie.table("messages").bulkPut(rows));
      dexie.close();

      const messages = Array.from({ length: N }, () => ({ role: "user", content }));
      const vaultWrite = async (name, options) => {
        const vault = await chatvault.openVault(name, options);
        const conv = await vault.createConversation("bench");
        const took = await time(() => vault.addMessages(conv.id, messages));
        return { vault, conv, took };
      };
      const plain = await vaultWrite("bench-plain", {});
      plain.vault.lock();
      const sealed = await vaultWrite("bench-sealed", { passphrase: "bench passphrase" });
      const vaultReads = [];
      for (let i = 0; i < READS; i++) {
        vaultReads.push(
          await time(async () => {
            const page = await sealed.vault.messages(sealed.conv.id, { limit: 50 });
            if (page.items.length !== 50) throw new Error("vault read");
          }),
        );
      }
      sealed.vault.lock();

      const unlocks = [];
      for (let i = 0; i < 3; i++) {
        unlocks.push(
          await time(async () => {
            const vault = await chatvault.openVault("bench-sealed", { passphrase: "bench passphrase" });
            vault.lock();
          }),
        );
      }
      // The backends side by side, each in its own worker.
      const inWorker = async (name, backend) => {
        let vault;
        try {
          vault = await chatvault.openVault(name, { passphrase: "bench passphrase", worker: true, backend });
        } catch (e) {
          if (e.code === "unsupported") return { writeMs: null, latest50Ms: null };
          throw e;
        }
        const conv = await vault.createConversation("bench");
        const writeMs = await time(() => vault.addMessages(conv.id, messages));
        const reads = [];
        for (let i = 0; i < READS; i++) {
          reads.push(
            await time(async () => {
              const page = await vault.messages(conv.id, { limit: 50 });
              if (page.items.length !== 50) throw new Error(`${backend} read`);
            }),
          );
        }
        vault.lock();
        return { writeMs, latest50Ms: median(reads) };
      };
      const workerIdb = await inWorker("bench-worker-idb", "indexeddb");
      const workerOpfs = await inWorker(`bench-worker-opfs-${Date.now()}`, "opfs-sqlite");
      return {
        workerIdbWriteMs: workerIdb.writeMs,
        workerIdbLatest50Ms: workerIdb.latest50Ms,
        workerOpfsWriteMs: workerOpfs.writeMs,
        workerOpfsLatest50Ms: workerOpfs.latest50Ms,
        rawWriteMs: raw,
        dexieWriteMs: dexieWrite,
        plainWriteMs: plain.took,
        sealedWriteMs: sealed.took,
        rawLatest50Ms: median(rawReads),
        sealedLatest50Ms: median(vaultReads),
        unlockMs: median(unlocks),
        userAgent: navigator.userAgent,
      };
    },
    { N, READS },
  );
  console.log(JSON.stringify(figures));
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
