import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_OPTIONS, openPage, serve } from "../test/harness.mjs";
const server = await serve();
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "p-")), CHROMIUM_OPTIONS);
const page = await openPage(context, server.url);
const cdp = await context.newCDPSession(page);
let sessionId = null;
cdp.on("Target.attachedToTarget", (e) => { if (e.targetInfo.type === "worker") sessionId = e.sessionId; });
await cdp.send("Target.setAutoAttach", { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });
const plain = process.argv[2] === "plain";
await page.evaluate(async (plain) => {
  window.vault = await chatvault.openVault(`prof-${Date.now()}`, { passphrase: plain ? undefined : "p", backend: "opfs-sqlite" });
  window.conv = await vault.createConversation("bench");
  window.msgs = Array.from({ length: 10000 }, (_, i) => ({ role: "user", content: "x".repeat(1024) }));
  await vault.addMessages(conv.id, msgs.slice(0, 100));
}, plain);
const results = new Map();
cdp.on("Target.receivedMessageFromTarget", (e) => {
  const m = JSON.parse(e.message);
  if (m.id && results.has(m.id)) results.get(m.id)(m);
});
const call = (method, params = {}) => new Promise((resolve) => {
  const id = Math.floor(Math.random() * 1e9);
  results.set(id, resolve);
  cdp.send("Target.sendMessageToTarget", { sessionId, message: JSON.stringify({ id, method, params }) });
});
await call("Profiler.enable");
await call("Profiler.setSamplingInterval", { interval: 100 });
await call("Profiler.start");
const t = await page.evaluate(async () => { const t0 = performance.now(); await vault.addMessages(conv.id, msgs); return performance.now() - t0; });
const { result } = await call("Profiler.stop");
console.log("took", t.toFixed(0));
writeFileSync("/tmp/worker.cpuprofile", JSON.stringify(result.profile));
await context.close(); server.close();
