// The demo app end to end, as people use it: headless Chromium (Debian's,
// driven by playwright-core) against a freshly started chatvault server
// that serves the built app (`cargo xtask test` starts it and sets
// CHATVAULT_DEMO_URL). Elements are found by role and accessible name.
// Every main screen is checked by axe-core (no serious or critical
// violation) and photographed at 1280x800 and 390x844 into
// CHATVAULT_SCREENSHOTS.
//
// The steps build on each other (one account's story), so they run in
// order in one browser.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";
import axe from "axe-core";

const URL_ = process.env.CHATVAULT_DEMO_URL;
if (!URL_) throw new Error("CHATVAULT_DEMO_URL is not set: run through `cargo xtask test`");
const SHOTS = process.env.CHATVAULT_SCREENSHOTS ?? join(tmpdir(), "chatvault-e2e-screenshots");
const SIZES = [
  { name: "desktop", width: 1280, height: 800 },
  { name: "phone", width: 390, height: 844 },
];

const run = Date.now().toString(36);
const ann = { username: `ann-${run}`, passphrase: "correct horse battery staple" };
const cal = { username: `cal-${run}`, passphrase: "tuna sandwich orbit lantern" };
const FIRST = "Hello from A";

let browser;
let contextA;
let contextB;
/** ann's first tab, her second device, a tab of the first device. */
let a;
let b;
let a2;
let exported;

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
});

async function newPage(context) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error(`[page error] ${error.message}`));
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(URL_);
  return page;
}

/** Polls `check` (async, returns truthy when done) until `timeout`. */
async function eventually(what, check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const subject = typeof what === "function" ? what() : what;
      throw new Error(`timed out: ${subject}${last ? ` (${last.message})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const text = (locator) => locator.innerText({ timeout: 1000 });
const log = (page) => page.getByRole("log", { name: "Messages" });
const status = (page) => page.getByRole("status", { name: "Sync status" });
const conversations = (page) => page.getByRole("list", { name: "Conversations" });

async function seeInLog(page, content, timeout) {
  await eventually(`"${content}" in the message log`, async () => (await text(log(page))).includes(content), timeout);
}

async function seeStatus(page, part, timeout) {
  let shown = "";
  await eventually(
    () => `"${part}" in the status bar (it shows: ${shown})`,
    async () => (shown = await text(status(page))).includes(part),
    timeout,
  );
}

/** axe-core on the page as it is: no serious or critical violation. */
async function accessible(page, screen) {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ content: axe.source });
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    [],
    `accessibility violations on ${screen}`,
  );
}

/** Screenshots of `screen` at both sizes (each checked by axe), then back to desktop. */
async function capture(page, screen) {
  for (const size of SIZES) {
    await page.setViewportSize({ width: size.width, height: size.height });
    await page.waitForTimeout(100);
    await accessible(page, `${screen} at ${size.width}px`);
    const overflowing = await page.evaluate(
      (width) =>
        [...document.querySelectorAll("body *")]
          .filter((e) => e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().right > width + 1)
          .map((e) => `${e.tagName.toLowerCase()}.${e.className}`),
      size.width,
    );
    assert.deepEqual(overflowing, [], `${screen} is wider than ${size.width}px`);
    const path = join(SHOTS, `${screen}-${size.name}.png`);
    await page.screenshot({ path });
    console.log(`screenshot: ${path}`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

async function register(page, { username, passphrase }) {
  const form = page.getByRole("form", { name: "Create account" });
  await form.getByLabel("Username").fill(username);
  await form.getByLabel("Passphrase", { exact: true }).fill(passphrase);
  await form.getByLabel("Repeat passphrase").fill(passphrase);
  await form.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Conversations" }).waitFor({ timeout: 30_000 });
}

async function send(page, content) {
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill(content);
  await box.press("Enter");
  await seeInLog(page, content, 5000);
}

async function openSettings(page) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("button", { name: "Settings" }).click();
  await page.getByRole("heading", { name: "Retention" }).waitFor();
}

async function openChats(page) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("button", { name: "Chats" }).click();
  await page.getByRole("heading", { name: "Conversations" }).waitFor();
}

const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The button that opens conversation `title` in the list. */
const opener = (page, title) =>
  conversations(page).getByRole("button", { name: new RegExp(`^(Pinned: )?${escape(title)}\\b`) });

async function openConversation(page, title) {
  await eventually(`conversation "${title}" listed`, () => opener(page, title).first().isVisible());
  await opener(page, title).first().click();
}

test("register, send (optimistic, with the local assistant's reply), reload, wrong passphrase, unlock: still there", async () => {
  contextA = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  a = await newPage(contextA);
  const create = a.getByRole("form", { name: "Create account" });
  await create.getByLabel("Passphrase", { exact: true }).fill("abc");
  assert.match(await text(create), /Strength: too short/);
  await create.getByLabel("Passphrase", { exact: true }).fill(ann.passphrase);
  assert.match(await text(create), /Strength: (fair|strong)/);
  await capture(a, "welcome");
  await register(a, ann);
  await send(a, FIRST);
  await seeInLog(a, `You said: “${FIRST}” — 3 words`);
  await openConversation(a, FIRST);
  await seeStatus(a, "0 pending");
  await capture(a, "chat");

  await a.reload();
  await a.getByRole("heading", { name: `Welcome back, ${ann.username}` }).waitFor();
  await capture(a, "unlock");
  await a.getByLabel("Passphrase").fill("not my passphrase");
  await a.getByRole("button", { name: "Unlock" }).click();
  await a.getByRole("alert").filter({ hasText: "Wrong passphrase." }).waitFor({ timeout: 30_000 });
  await a.getByLabel("Passphrase").fill(ann.passphrase);
  await a.getByRole("button", { name: "Unlock" }).click();
  // The open conversation is remembered (zustand, sealed in the vault).
  await seeInLog(a, FIRST, 30_000);
});

test("conversations: create, rename, pin, search by title, delete", async () => {
  await a.getByRole("button", { name: "New conversation" }).click();
  await send(a, "scratch note");
  await openConversation(a, "scratch note");
  await a.getByRole("button", { name: "Rename scratch note" }).click();
  const title = a.getByRole("textbox", { name: "New title" });
  await title.fill("Groceries");
  await title.press("Enter");
  await eventually("renamed", () => opener(a, "Groceries").isVisible());
  await a.getByRole("button", { name: "Pin Groceries" }).click();
  await eventually("pinned", async () => (await a.getByRole("button", { name: "Pin Groceries" }).getAttribute("aria-pressed")) === "true");
  // Pinned first, although older.
  await eventually("pinned first", async () => (await text(conversations(a).getByRole("listitem").first())).includes("Groceries"));
  await a.getByRole("searchbox", { name: "Search conversations" }).fill("hello");
  await eventually("search narrows", async () => (await conversations(a).getByRole("listitem").count()) === 1);
  await a.getByRole("searchbox", { name: "Search conversations" }).fill("");
  await a.getByRole("button", { name: "Delete Groceries" }).click();
  await eventually("deleted", async () => !(await text(conversations(a))).includes("Groceries"));
  await openConversation(a, FIRST);
});

test("a second device joins: it gets the history, and its message reaches A within 2 s without a reload", async () => {
  contextB = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  b = await newPage(contextB);
  await b.getByRole("button", { name: "Sign in on this device" }).click();
  const form = b.getByRole("form", { name: "Sign in" });
  await form.getByLabel("Username").fill(ann.username);
  await form.getByLabel("Passphrase").fill(ann.passphrase);
  await form.getByRole("button", { name: "Sign in" }).click();
  await openConversation(b, FIRST);
  await seeInLog(b, FIRST, 30_000);
  await seeStatus(a, "Live");
  await seeStatus(b, "Live");

  await send(b, "Hello from B");
  const sent = Date.now();
  await seeInLog(a, "Hello from B", 2000);
  console.log(`realtime: B's message shown in A after ${Date.now() - sent} ms`);
});

test("offline: three messages wait as 3 pending, then sync when back online", async () => {
  // Only the three messages: no assistant replies for this step.
  await openSettings(a);
  await a.getByRole("checkbox", { name: "The local assistant answers each message" }).uncheck();
  await openChats(a);
  await openConversation(a, FIRST);
  await contextA.setOffline(true);
  await seeStatus(a, "Offline");
  for (const n of [1, 2, 3]) await send(a, `offline ${n}`);
  await seeStatus(a, "3 pending");
  await capture(a, "chat-offline");
  await contextA.setOffline(false);
  await seeStatus(a, "0 pending", 30_000);
  await seeStatus(a, "Online");
  for (const n of [1, 2, 3]) await seeInLog(b, `offline ${n}`, 10_000);
});

test("retention: a dry run lists the conversation older than the policy, applying deletes it and keeps the rest", async () => {
  await openSettings(a);
  // A conversation last active 60 days ago, moved in from another app.
  const old = new Date(Date.now() - 60 * 86_400_000).toISOString();
  const file = JSON.stringify({
    version: 1,
    exportedAt: old,
    conversations: [
      {
        id: `old-${run}`,
        title: "Old trip",
        createdAt: old,
        updatedAt: old,
        messages: [{ id: `old-m-${run}`, role: "user", content: "Lisbon?", createdAt: old }],
      },
    ],
  });
  const importForm = a.getByRole("form", { name: "Import" });
  await importForm.getByLabel("Export file").setInputFiles({ name: "other-app.json", mimeType: "application/json", buffer: Buffer.from(file) });
  await importForm.getByRole("button", { name: "Import" }).click();
  await eventually("imported", async () => (await text(a.locator("#export-heading").locator(".."))).includes("Imported 2 of 2 records"));
  // Retention keeps what is not synced yet: wait for the push.
  await seeStatus(a, "0 pending", 30_000);

  const retention = a.getByRole("form", { name: "Retention policy" });
  assert.equal(await retention.getByLabel("Maximum age (days)").inputValue(), "30");
  await retention.getByRole("button", { name: "Preview" }).click();
  const preview = a.getByRole("list", { name: "Would delete" });
  await eventually("preview lists Old trip", async () => (await text(preview)).includes("Old trip"));
  assert.equal(await preview.getByRole("listitem").count(), 1);
  await capture(a, "settings");
  // The dry run deleted nothing.
  await openChats(a);
  await eventually("Old trip still listed", async () => (await text(conversations(a))).includes("Old trip"));
  await openSettings(a);
  await retention.getByRole("button", { name: "Preview" }).click();
  await preview.waitFor();
  await retention.getByRole("button", { name: "Apply" }).click();
  await eventually("applied", async () => (await text(a.getByRole("region", { name: "Retention" }))).includes("Deleted 1 conversation"));
  await openChats(a);
  await eventually("Old trip gone", async () => !(await text(conversations(a))).includes("Old trip"));
  assert.match(await text(conversations(a)), new RegExp(FIRST));
  // ...on the other device too.
  await eventually("Old trip gone on B", async () => !(await text(conversations(b))).includes("Old trip"));
});

test("export (encrypted), import into a fresh account; a tampered file and a wrong passphrase are refused, changing nothing", async () => {
  await openSettings(a);
  const exportForm = a.getByRole("form", { name: "Export" });
  assert.equal(await exportForm.getByRole("checkbox", { name: "Encrypt the export with a passphrase" }).isChecked(), true);
  await exportForm.getByLabel("Export passphrase").fill("export secret 42");
  const [download] = await Promise.all([a.waitForEvent("download"), exportForm.getByRole("button", { name: "Export" }).click()]);
  exported = join(SHOTS, `export-${run}.cvx`);
  await download.saveAs(exported);
  const bytes = await readFile(exported);
  assert.ok(!bytes.includes(Buffer.from(FIRST)), "the encrypted export holds no plaintext");

  const contextC = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const c = await newPage(contextC);
  await register(c, cal);
  await openSettings(c);
  const importForm = c.getByRole("form", { name: "Import" });
  const outcome = c.getByRole("region", { name: "Export and import" });

  const tampered = Buffer.from(bytes);
  tampered[Math.floor(tampered.length / 2)] ^= 0x01;
  await importForm.getByLabel("Export file").setInputFiles({ name: "tampered.json", mimeType: "application/json", buffer: tampered });
  await importForm.getByLabel("File passphrase (if encrypted)").fill("export secret 42");
  await importForm.getByRole("button", { name: "Import" }).click();
  await eventually("tampered refused", async () => /Nothing was imported\. .*damaged or was tampered with/.test(await text(outcome.getByRole("alert"))));

  await importForm.getByLabel("Export file").setInputFiles(exported);
  await importForm.getByLabel("File passphrase (if encrypted)").fill("not it");
  await importForm.getByRole("button", { name: "Import" }).click();
  await eventually("wrong passphrase refused", async () => (await text(outcome.getByRole("alert"))).includes("Wrong passphrase"));

  await openChats(c);
  await eventually("C has no conversation yet", async () =>
    /No conversations yet/.test(await text(c.getByRole("region", { name: "Conversations" }))),
  );
  await openSettings(c);
  await importForm.getByLabel("Export file").setInputFiles(exported);
  await importForm.getByLabel("File passphrase (if encrypted)").fill("export secret 42");
  await importForm.getByRole("button", { name: "Import" }).click();
  await eventually("imported", async () => /Imported \d+ of \d+ records \(1 conversation, 7 messages\)/.test(await text(outcome)));
  await openChats(c);
  await openConversation(c, FIRST);
  for (const content of [FIRST, "Hello from B", "offline 3"]) await seeInLog(c, content);
  await capture(c, "conversation-imported");
  await contextC.close();
});

test("two tabs of one browser: one syncs, both update", async () => {
  await openChats(a);
  await openConversation(a, FIRST);
  a2 = await newPage(contextA);
  await a2.getByLabel("Passphrase").fill(ann.passphrase);
  await a2.getByRole("button", { name: "Unlock" }).click();
  await seeInLog(a2, "offline 3", 30_000);
  await send(a2, "from the second tab");
  await seeInLog(a, "from the second tab", 5000);
  await seeInLog(b, "from the second tab", 10_000);
  await send(b, "B answers both tabs");
  await seeInLog(a, "B answers both tabs", 10_000);
  await seeInLog(a2, "B answers both tabs", 10_000);
  await seeStatus(a, "0 pending");
  await seeStatus(a2, "0 pending");
});

test("keyboard only: create an account, start a conversation, send, open settings", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await newPage(context);
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? document.activeElement?.labels?.[0]?.innerText?.split("\n")[0] ?? document.activeElement?.textContent);
  // The first Tab may only bring focus into the page.
  await page.keyboard.press("Tab");
  for (let i = 0; i < 3 && !(await page.evaluate(() => document.activeElement?.matches("button, input, textarea"))); i++) {
    await page.keyboard.press("Tab");
  }
  const order = [((await focused()) ?? "").trim()];
  for (let i = 1; i < 5; i++) {
    await page.keyboard.press("Tab");
    order.push(((await focused()) ?? "").trim());
  }
  assert.deepEqual(order, ["Create account", "Sign in on this device", "Username", "Passphrase", "Repeat passphrase"]);
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.type(`kim-${run}`);
  await page.keyboard.press("Tab");
  await page.keyboard.type("keyboard only please");
  await page.keyboard.press("Tab");
  await page.keyboard.type("keyboard only please");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Conversations" }).waitFor({ timeout: 30_000 });
  // Tab to "New conversation" and press it; the composer then takes the message.
  await eventually("New conversation focused", async () => {
    await page.keyboard.press("Tab");
    return (await focused())?.trim() === "New conversation";
  });
  await page.keyboard.press("Enter");
  await eventually("the composer focused", async () => {
    await page.keyboard.press("Tab");
    return (await focused())?.trim() === "Message";
  });
  await page.keyboard.type("typed without a mouse");
  await page.keyboard.press("Enter");
  await seeInLog(page, "typed without a mouse", 5000);
  await capture(page, "conversation-keyboard");
  await context.close();
});

/** Signs B in again from its status bar after its session ended elsewhere. */
async function signInAgain(page, passphrase) {
  await seeStatus(page, "Signed out on this device", 15_000);
  const again = page.getByRole("form", { name: "Sign in again" });
  await again.getByLabel("Passphrase").fill(passphrase);
  await again.getByRole("button", { name: "Sign in" }).click();
  await seeStatus(page, "0 pending", 15_000);
}

test("sessions: A signs out everywhere else; B is told, keeps its change, and signs in again", async () => {
  await openSettings(a);
  const sessions = a.getByRole("list", { name: "Sessions" });
  await eventually("A's and B's sessions listed", async () => (await sessions.getByRole("listitem").count()) >= 2);
  const listed = await sessions.getByRole("listitem").count();
  console.log(`sessions listed before revoking: ${listed}`);
  assert.equal((await text(sessions)).match(/\(this device\)/g)?.length, 1);
  await a.getByRole("button", { name: "Sign out everywhere else" }).click();
  const region = a.getByRole("region", { name: "Active sessions" });
  await eventually("revoked", async () => /Signed out \d+ other sessions?\./.test(await text(region)));
  await eventually("only this device left", async () => (await sessions.getByRole("listitem").count()) === 1);
  await send(b, "after revocation");
  await seeStatus(b, "Signed out on this device", 15_000);
  // The message and the assistant's reply wait, unsynced.
  await seeStatus(b, "2 pending");
  await signInAgain(b, ann.passphrase);
  await openChats(a);
  await openConversation(a, FIRST);
  await seeInLog(a, "after revocation", 10_000);
});

test("passphrase change with key rotation: the other tab locks, B signs in with the new one, the old one no longer unlocks", async () => {
  const fresh = "a brand new passphrase 7";
  await openSettings(a);
  const form = a.getByRole("form", { name: "Change passphrase" });
  await form.getByLabel("Current passphrase").fill(ann.passphrase);
  await form.getByLabel("New passphrase", { exact: true }).fill(fresh);
  await form.getByLabel("Repeat new passphrase").fill(fresh);
  await form.getByRole("checkbox", { name: /rotate the data key/ }).check();
  await form.getByRole("button", { name: "Change passphrase" }).click();
  await eventually(
    "changed",
    async () => (await text(a.getByRole("region", { name: "Passphrase" }))).includes("Passphrase changed and the data key rotated"),
    60_000,
  );
  // The second tab's keys are stale: it asks for the passphrase again.
  await a2.getByRole("heading", { name: `Welcome back, ${ann.username}` }).waitFor();
  assert.match(await text(a2.getByRole("alert")), /data key changed in another tab/);
  await a2.getByLabel("Passphrase").fill(fresh);
  await a2.getByRole("button", { name: "Unlock" }).click();
  await seeInLog(a2, FIRST, 30_000);
  // B is signed out; with the new passphrase it syncs both ways again.
  await send(b, "written before B knew");
  await signInAgain(b, fresh);
  await openChats(a);
  await openConversation(a, FIRST);
  await seeInLog(a, "written before B knew", 10_000);
  await send(a, "written with the new key");
  await seeInLog(b, "written with the new key", 10_000);
  // The old passphrase no longer unlocks this device; the new one does.
  await a.reload();
  await a.getByLabel("Passphrase").fill(ann.passphrase);
  await a.getByRole("button", { name: "Unlock" }).click();
  await a.getByRole("alert").filter({ hasText: "Wrong passphrase." }).waitFor({ timeout: 30_000 });
  await a.getByLabel("Passphrase").fill(fresh);
  await a.getByRole("button", { name: "Unlock" }).click();
  await seeInLog(a, "written with the new key", 30_000);
  ann.passphrase = fresh;
});

test("both devices end converged; logging out and in again reopens the same local vault", async () => {
  const shown = async (page) =>
    (await text(log(page))).match(/offline \d|Hello from [AB]|from the second tab|B answers both tabs/g).join("|");
  await eventually("B shows what A shows", async () => (await shown(a)) === (await shown(b)), 10_000);
  // Log out keeps this device's encrypted copy: signing in again opens it
  // (and catches up) instead of downloading everything anew.
  await b.getByRole("button", { name: "Log out" }).click();
  await b.getByRole("button", { name: "Sign in on this device" }).click();
  const form = b.getByRole("form", { name: "Sign in" });
  await form.getByLabel("Username").fill(ann.username);
  await form.getByLabel("Passphrase").fill(ann.passphrase);
  await form.getByRole("button", { name: "Sign in" }).click();
  await seeInLog(b, "written with the new key", 30_000);
  await seeStatus(b, "0 pending");
  assert.equal(
    await b.evaluate(async () => (await indexedDB.databases()).filter((d) => d.name.startsWith("chatvault-demo-")).length),
    1,
    "one vault on this device",
  );
  await writeFile(join(SHOTS, "README.txt"), `chatvault demo e2e screenshots, run ${run}\n`);
  await contextA.close();
  await contextB.close();
});
