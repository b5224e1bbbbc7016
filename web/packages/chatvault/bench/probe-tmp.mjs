import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_OPTIONS, openPage, serve } from "../test/harness.mjs";
const server = await serve();
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "p-")), CHROMIUM_OPTIONS);
const page = await openPage(context, server.url);
let last = "";
page.on("console", (m) => { last = m.text(); });
for (const [backend, passphrase] of [["opfs-sqlite", "p"], ["opfs-sqlite", undefined], ["opfs-sqlite", "p"], ["opfs-sqlite", undefined], ["opfs-sqlite", "p"], ["indexeddb", "p"]]) {
  const r = await page.evaluate(async ({ backend, passphrase }) => {
    const vault = await chatvault.openVault(`probe-${backend}-${Date.now()}`, { passphrase, worker: true, backend });
    const conv = await vault.createConversation("bench");
    const messages = Array.from({ length: 10000 }, (_, i) => ({ role: "user", content: "x".repeat(1024) }));
    const t0 = performance.now();
    await vault.addMessages(conv.id, messages);
    const t = performance.now() - t0;
    const r0 = performance.now();
    for (let i = 0; i < 20; i++) await vault.messages(conv.id, { limit: 50 });
    const read = (performance.now() - r0) / 20;
    vault.lock();
    return [t, read];
  }, { backend, passphrase });
  await new Promise((r) => setTimeout(r, 100));
  console.log(backend, passphrase ? "encrypted" : "plain", r[0].toFixed(0), "read", r[1].toFixed(2), last);
}
await context.close(); server.close();
