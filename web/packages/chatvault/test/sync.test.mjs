// Sync through the package, against the real chatvault-server that
// `cargo xtask test` starts (CHATVAULT_TEST_SERVER; it also serves this
// package, so the page and the API share an origin as in a deployed app).
//
// Two browser contexts are two devices (separate IndexedDB, separate
// cookie jars); pages of one context are tabs of one app. Periodic sync is
// an hour away, so only pushes, pokes and reconnects move data.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, openPage } from "./harness.mjs";

const PASS = "correct horse battery staple";
const SERVER = process.env.CHATVAULT_TEST_SERVER;
const username = `alice${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
const devices = {};

before(async () => {
  assert.ok(
    SERVER,
    "CHATVAULT_TEST_SERVER is not set: run the package tests with `cargo xtask test`, which starts the server they sync with",
  );
  devices.browser = await launch();
  devices.a = await devices.browser.newContext();
  devices.b = await devices.browser.newContext();
});

after(async () => {
  await devices.browser?.close();
});

/** A tab of `device` on the test page, with what it hears kept in `window.heard`. */
async function tab(device) {
  const page = await openPage(device, `${SERVER}/test/page.html`);
  await page.evaluate(() => {
    window.heard = [];
    window.statuses = [];
  });
  return page;
}

/** Opens (or creates) vault `name` in `page` and starts sync as `options` say. */
async function startSync(page, name, options) {
  return page.evaluate(
    async ({ name, pass, options }) => {
      window.vault = await chatvault.openVault(name, { passphrase: pass, worker: options.worker });
      window.vault.subscribe((change) => window.heard.push(change));
      const { worker: _, ...rest } = options;
      window.sync = await window.vault.startSync({
        server: location.origin,
        passphrase: pass,
        intervalSeconds: 3600,
        ...rest,
      });
      window.sync.subscribe((status) => window.statuses.push(status));
      return window.sync?.status.role ?? null;
    },
    { name, pass: PASS, options },
  );
}

/** Waits until `page`'s sync has nothing pending and is idle. */
async function settled(page) {
  await page.waitForFunction(
    () =>
      window.sync.status.state === "idle" &&
      window.sync.status.pending === 0 &&
      window.sync.status.lastSyncedAt !== null,
    null,
    { timeout: 20_000 },
  );
}

/**
 * Waits until `predicate(arg)`, an async function run in `page`, resolves
 * truthy (rejections count as not yet), polling every 250 ms.
 */
async function eventually(page, predicate, arg, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const ok = await page.evaluate(predicate, arg).catch(() => false);
    if (ok) return ok;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${predicate}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** The contents of conversation `id` in `page`'s vault, oldest first. */
function contents(page, id) {
  return page.evaluate(async (id) => {
    const page = await window.vault.messages(id, { limit: 1000 });
    return page.items.map((m) => m.content).reverse();
  }, id);
}

test("sign-in errors are ChatvaultErrors with stable codes", async () => {
  const page = await tab(devices.a);
  const codes = await page.evaluate(
    async ({ pass, username }) => {
      const plain = await chatvault.openVault(`sync-plain-${username}`);
      const encrypted = await chatvault.openVault(`sync-errors-${username}`, { passphrase: pass });
      const attempts = [
        () => plain.startSync({ server: location.origin, username, passphrase: pass, create: true }),
        () => encrypted.startSync({ server: location.origin, username: `nobody-${username}`, passphrase: pass, mode: "login" }),
        () => encrypted.startSync({ server: location.origin, username, passphrase: pass, mode: "sideways" }),
        () => encrypted.startSync({ server: "not a url", username, passphrase: pass }),
        () => chatvault.joinVault(`sync-join-${username}`, { server: location.origin, username: `nobody-${username}`, passphrase: pass }),
      ];
      const codes = [];
      for (const attempt of attempts) {
        try {
          await attempt();
          codes.push("no error");
        } catch (e) {
          codes.push(e instanceof chatvault.ChatvaultError ? e.code : `not a ChatvaultError: ${e}`);
        }
      }
      codes.push(String(await encrypted.startSync({ server: location.origin, username, mode: "resume" })));
      return codes;
    },
    { pass: PASS, username },
  );
  assert.deepEqual(codes, [
    "not_encrypted",
    "invalid_credentials",
    "invalid",
    "invalid_url",
    "invalid_credentials",
    "null",
  ]);
  await page.close();
});

test("a second device joins, gets the history, then every write in realtime, and an offline writer catches up", async () => {
  const a = await tab(devices.a);
  assert.equal(await startSync(a, "sync-device-a", { username, create: true }), "leader");
  const conversationId = await a.evaluate(async () => {
    const conv = await vault.createConversation("across devices");
    await vault.addMessage(conv.id, { role: "user", content: "written before B existed" });
    return conv.id;
  });
  await settled(a);

  // B: a new device, vault in a worker.
  const b = await tab(devices.b);
  await b.evaluate(
    async ({ pass, username }) => {
      const joined = await chatvault.joinVault("sync-device-b", {
        server: location.origin,
        username,
        passphrase: pass,
        intervalSeconds: 3600,
        worker: true,
      });
      window.vault = joined.vault;
      window.sync = joined.sync;
      window.vault.subscribe((change) => window.heard.push(change));
    },
    { pass: PASS, username },
  );
  await b.waitForFunction(() => window.heard.some((c) => c.source === "sync"), null, { timeout: 20_000 });
  assert.deepEqual(await contents(b, conversationId), ["written before B existed"]);
  await b.waitForFunction(() => window.sync.status.realtime, null, { timeout: 20_000 });

  // Realtime: A's next write reaches B through the poke alone.
  const heardBefore = await b.evaluate(() => window.heard.length);
  await a.evaluate(
    (id) => vault.addMessage(id, { role: "assistant", content: "pushed and poked" }),
    conversationId,
  );
  await b.waitForFunction((n) => window.heard.length > n, heardBefore, { timeout: 20_000 });
  assert.deepEqual(await contents(b, conversationId), ["written before B existed", "pushed and poked"]);

  // Offline: A keeps writing; nothing leaves, the status says why.
  await devices.a.setOffline(true);
  await a.evaluate(async (id) => {
    for (const text of ["offline 1", "offline 2", "offline 3"]) {
      await vault.addMessage(id, { role: "user", content: text });
    }
  }, conversationId);
  await a.waitForFunction(() => window.sync.status.state === "offline" && window.sync.status.pending >= 3, null, {
    timeout: 20_000,
  });
  assert.equal((await contents(b, conversationId)).length, 2, "nothing reached B while A was offline");
  await devices.a.setOffline(false);
  await settled(a);
  await eventually(
    b,
    async (id) => (await window.vault.messages(id)).items.some((m) => m.content === "offline 3"),
    conversationId,
  );
  assert.deepEqual(await contents(b, conversationId), [
    "written before B existed",
    "pushed and poked",
    "offline 1",
    "offline 2",
    "offline 3",
  ]);

  // Both ways: B writes, A receives.
  await b.evaluate((id) => vault.addMessage(id, { role: "user", content: "from B" }), conversationId);
  await eventually(
    a,
    async (id) => (await window.vault.messages(id)).items.some((m) => m.content === "from B"),
    conversationId,
  );
  const sessions = await a.evaluate(() => window.sync.sessions());
  assert.equal(sessions.filter((s) => s.current).length, 1);
  assert.ok(sessions.every((s) => s.client === "browser"));
  await a.close();
  await b.close();
});

test("one tab syncs for all: a follower's writes go out, a closed leader hands over, a logout stops every tab", async () => {
  // Device A's second and third tabs on the vault the previous test made.
  const first = await tab(devices.a);
  const second = await tab(devices.a);
  const roles = [
    await startSync(first, "sync-device-a", { username }),
    await startSync(second, "sync-device-a", { username }),
  ];
  await first.waitForFunction(() => window.sync.status.role === "leader", null, { timeout: 10_000 });
  assert.deepEqual(roles, ["leader", "follower"]);
  await second.waitForFunction(() => window.sync.status.lastSyncedAt !== null, null, { timeout: 20_000 });

  // The follower writes; the leader pushes it (the follower holds no socket).
  const conversationId = await second.evaluate(async () => {
    const conv = await vault.createConversation("written by a follower");
    await vault.addMessage(conv.id, { role: "user", content: "via the leader" });
    return conv.id;
  });
  const observer = await tab(devices.b);
  await observer.evaluate(async (pass) => {
    window.vault = await chatvault.openVault("sync-device-b", { passphrase: pass, worker: true });
  }, PASS);
  // B's own sync (in the previous test's worker) is gone with its page:
  // this tab resumes it from the saved sign-in, without the passphrase.
  const resumed = await observer.evaluate(async (username) => {
    window.sync = await window.vault.startSync({ server: location.origin, username, mode: "resume", intervalSeconds: 3600 });
    return window.sync?.status.role ?? null;
  }, username);
  assert.ok(resumed === "leader" || resumed === "follower", `resumed as ${resumed}`);
  await eventually(observer, async (id) => (await window.vault.messages(id)).items.length === 1, conversationId);
  const forwarded = await second.evaluate(() => window.sync.syncNow());
  assert.equal(typeof forwarded.pulled, "number", "a follower's syncNow runs in the leader's tab");

  // The leader's tab closes: the follower takes over and syncs.
  await first.close();
  await second.waitForFunction(() => window.sync.status.role === "leader", null, { timeout: 10_000 });
  await second.evaluate((id) => vault.addMessage(id, { role: "user", content: "after the handover" }), conversationId);
  await settled(second);
  await eventually(
    observer,
    async (id) => (await window.vault.messages(id)).items.some((m) => m.content === "after the handover"),
    conversationId,
  );

  // A logout in one tab stops sync in every tab of the device.
  const third = await tab(devices.a);
  assert.equal(await startSync(third, "sync-device-a", { username }), "follower");
  await third.evaluate(() => window.sync.logout());
  await second.waitForFunction(() => window.sync.status.role === "signedOut", null, { timeout: 10_000 });
  const afterLogout = await third.evaluate(async () => {
    try {
      await window.sync.syncNow();
      return "synced";
    } catch (e) {
      return e.code;
    }
  });
  assert.equal(afterLogout, "stopped");
  // Signed out, the vault still works offline-first, and a sign-in with
  // the passphrase starts again.
  const again = await second.evaluate(async ({ pass, username }) => {
    await vault.addMessage((await vault.conversations()).items[0].id, { role: "user", content: "signed out" });
    window.sync = await vault.startSync({ server: location.origin, username, passphrase: pass, mode: "login" });
    return window.sync.status.role;
  }, { pass: PASS, username });
  assert.ok(["leader", "follower"].includes(again));
  await second.close();
  await third.close();
  await observer.close();
});

test("a passphrase changed on one device: the other shows unauthorized, and a sign-in in a follower tab gets its leader syncing", async () => {
  const NEW = "a brand new passphrase";
  const user = `${username}pw`;
  const a = await tab(devices.a);
  await startSync(a, "sync-pw-a", { username: user, create: true });
  const conversationId = await a.evaluate(async () => (await vault.createConversation("before the change")).id);
  await settled(a);

  // Device B: a leader tab (joined) and a follower tab.
  const leader = await tab(devices.b);
  await leader.evaluate(
    async ({ pass, user }) => {
      const joined = await chatvault.joinVault("sync-pw-b", { server: location.origin, username: user, passphrase: pass, intervalSeconds: 3600 });
      window.vault = joined.vault;
      window.sync = joined.sync;
    },
    { pass: PASS, user },
  );
  const follower = await tab(devices.b);
  assert.equal(await startSync(follower, "sync-pw-b", { username: user }), "follower");

  await a.evaluate((pass) => vault.changePassphrase(pass.old, pass.new), { old: PASS, new: NEW });
  // B's next sync is refused: the status says so with a stable code.
  const refused = await follower.evaluate(async () => {
    try {
      await window.sync.syncNow();
      return "synced";
    } catch (e) {
      return e.code;
    }
  });
  assert.equal(refused, "unauthorized");
  await follower.waitForFunction(() => window.sync.status.errorCode === "unauthorized", null, { timeout: 10_000 });

  // The old passphrase no longer signs in; the new one does, in the
  // follower, and the leader adopts that sign-in and syncs again.
  const wrong = await follower.evaluate((pass) => window.sync.signIn(pass).then(() => "signed in", (e) => e.code), PASS);
  assert.equal(wrong, "invalid_credentials");
  await follower.evaluate((pass) => window.sync.signIn(pass), NEW);
  await a.evaluate((id) => vault.addMessage(id, { role: "user", content: "after the change" }), conversationId);
  await settled(a);
  // Forwarded to the leader: it succeeds now (the leader may already have
  // pulled the message on its own, woken by the adopted sign-in).
  const report = await follower.evaluate(() => window.sync.syncNow());
  assert.equal(typeof report.pulled, "number");
  await eventually(
    leader,
    async (id) => (await window.vault.messages(id)).items.some((m) => m.content === "after the change"),
    conversationId,
  );
  assert.equal(await leader.evaluate(() => window.sync.status.errorCode), null);
  await a.close();
  await leader.close();
  await follower.close();
});

test("a SQLite/OPFS vault shared by tabs syncs through its leader's worker, and again after that tab closes", async () => {
  const user = `${username}opfs`;
  const device = await devices.browser.newContext();
  const [first, second] = [await tab(device), await tab(device)];
  const open = (page, options) =>
    page.evaluate(
      async ({ pass, user, options }) => {
        window.vault = await chatvault.openVault("sync-opfs", { passphrase: pass, backend: "opfs-sqlite" });
        window.sync = await window.vault.startSync({
          server: location.origin,
          username: user,
          passphrase: pass,
          intervalSeconds: 3600,
          ...options,
        });
        return [window.vault.isLeader, window.sync.username];
      },
      { pass: PASS, user, options },
    );
  assert.deepEqual(await open(first, { create: true }), [true, user]);
  assert.deepEqual(await open(second, {}), [false, user], "the second tab joins the running sync");

  // The follower's write goes out through the leader's worker.
  const conversationId = await second.evaluate(async () => {
    const conv = await vault.createConversation("from an OPFS follower tab");
    await vault.addMessage(conv.id, { role: "user", content: "before the handover" });
    return conv.id;
  });
  const peer = await tab(devices.b);
  await peer.evaluate(
    async ({ pass, user }) => {
      const joined = await chatvault.joinVault("sync-opfs-peer", {
        server: location.origin,
        username: user,
        passphrase: pass,
        intervalSeconds: 3600,
      });
      window.vault = joined.vault;
      window.sync = joined.sync;
    },
    { pass: PASS, user },
  );
  const has = (content) =>
    eventually(
      peer,
      async ({ id, content }) => {
        await window.sync.syncNow();
        return (await window.vault.messages(id)).items.some((m) => m.content === content);
      },
      { id: conversationId, content },
    );
  await has("before the handover");

  // The leader closes: the second tab opens the database, starts sync in
  // its own worker, and its writes keep reaching the other device.
  await first.close();
  await second.waitForFunction(() => window.vault.isLeader, null, { timeout: 20_000 });
  await second.evaluate((id) => vault.addMessage(id, { role: "user", content: "after the handover" }), conversationId);
  await has("after the handover");
  await second.waitForFunction(() => window.sync.status.role === "leader" && window.sync.status.pending === 0, null, {
    timeout: 20_000,
  });
  await second.close();
  await peer.close();
  await device.close();
});
