// The vault off the UI thread: this module runs in a dedicated Web Worker
// that `openVault(name, { worker: true })` starts, and serves the page's
// proxy (index.js, WorkerVault) over postMessage. Key derivation and bulk
// writes then never block the page.
//
// page → worker: {id, op: "open", name, options}
//                {id, op: "call", method, args}
//                {id, op: "kv", area, namespace, method, args}
//                {id, op: "join", name, options}     (joinVault: vault + sync)
//                {id, op: "startSync", options, join?}  (join: a running
//                                                     sync answers as started)
//                {id, op: "sync", method, args}      (a Sync method)
//                {id, op: "migrate", name, options}  (migrateVault)
//                {id, op: "verify", passphrase}      (may another tab use
//                                                     the vault? shared.js)
// worker → page: {id, ok: value} | {id, error: {code, message}}
//                {id, progress: {phase, done, total}}
//                {change}                     (every change the vault hears)
//                {syncStatus}                 (every status of the vault's Sync)

import { SYNC_METHODS, VAULT_METHODS, joinVault, openVault } from "./index.js";

/** The vault methods the page may call: everything but handles. */
const METHODS = new Set(VAULT_METHODS);
const KV_METHODS = new Set(["get", "set", "remove", "keys", "clear", "usage"]);

let vault = null;
const kvs = new Map();
const SYNC = new Set(SYNC_METHODS);

/** Relays a started Sync's status to the page; answers what the page needs. */
function relay(sync) {
  sync.subscribe((syncStatus) => postMessage({ syncStatus }));
  return { username: sync.username, status: sync.status };
}

function failure(e) {
  if (e && typeof e.code === "string") return { code: e.code, message: e.message };
  return { code: "internal", message: String(e?.message ?? e) };
}

async function handle(message) {
  switch (message.op) {
    case "open": {
      if (vault) throw { code: "invalid", message: "this worker already holds a vault" };
      vault = await openVault(message.name, message.options);
      vault.subscribe((change) => postMessage({ change }));
      return { name: vault.name, isEncrypted: vault.isEncrypted };
    }
    case "join": {
      if (vault) throw { code: "invalid", message: "this worker already holds a vault" };
      const joined = await joinVault(message.name, message.options);
      vault = joined.vault;
      vault.subscribe((change) => postMessage({ change }));
      return {
        vault: { name: vault.name, isEncrypted: vault.isEncrypted },
        sync: relay(joined.sync),
      };
    }
    case "verify": {
      if (!vault) throw { code: "locked", message: "the vault is locked: open it again" };
      await vault.checkPassphrase(message.passphrase);
      return { name: vault.name, isEncrypted: vault.isEncrypted };
    }
    case "startSync": {
      if (!vault) throw { code: "locked", message: "the vault is locked: open it again" };
      // Several tabs share one SQLite/OPFS vault (shared.js): each starts
      // sync, the first one's runs and the others join it.
      if (vault.sync && message.join) {
        return { username: vault.sync.username, status: vault.sync.status };
      }
      const sync = await vault.startSync(message.options);
      return sync ? relay(sync) : null;
    }
    case "sync": {
      if (!vault) throw { code: "locked", message: "the vault is locked: open it again" };
      if (!vault.sync) throw { code: "stopped", message: "sync was stopped: start it again" };
      if (!SYNC.has(message.method)) {
        throw { code: "invalid", message: `no sync method ${message.method}` };
      }
      return vault.sync[message.method](...message.args);
    }
    case "call": {
      if (!vault) throw { code: "locked", message: "the vault is locked: open it again" };
      if (!METHODS.has(message.method)) {
        throw { code: "invalid", message: `no vault method ${message.method}` };
      }
      // `{progress: true}` in an options argument: the page's callback,
      // reached by messages carrying the figures.
      const args = message.args.map((arg) =>
        arg && typeof arg === "object" && arg.progress === true
          ? { ...arg, onProgress: (progress) => postMessage({ id: message.id, progress }) }
          : arg,
      );
      return vault[message.method](...args);
    }
    case "kv": {
      if (!vault) throw { code: "locked", message: "the vault is locked: open it again" };
      if (!KV_METHODS.has(message.method)) {
        throw { code: "invalid", message: `no key-value method ${message.method}` };
      }
      const key = `${message.area}\u0000${message.namespace}`;
      let kv = kvs.get(key);
      if (!kv) {
        kv = await vault.sealedKv(message.area, message.namespace);
        kvs.set(key, kv);
      }
      return kv[message.method](...message.args);
    }
    case "migrate": {
      // migrateVault(name, {worker: true}): this worker holds no vault.
      if (vault) throw { code: "invalid", message: "this worker holds a vault: close it first" };
      const { migrateVault } = await import("./index.js");
      return migrateVault(message.name, {
        ...message.options,
        onProgress: (progress) => postMessage({ id: message.id, progress }),
      });
    }
    default:
      throw { code: "invalid", message: `unknown request ${message.op}` };
  }
}

onmessage = async (event) => {
  const message = event.data;
  try {
    postMessage({ id: message.id, ok: await handle(message) });
  } catch (e) {
    postMessage({ id: message.id, error: failure(e) });
  }
};
