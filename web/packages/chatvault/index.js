// chatvault for the browser: the typed API over the WebAssembly binding.
// The binding (pkg/, built by `cargo xtask package`) takes and returns JSON
// text and rejects with {code, message}; this module gives people objects,
// ChatvaultError instances and one place where the shapes are documented
// (index.d.ts). Times are plain numbers: milliseconds since the epoch.

import * as indexedDbBinding from "./pkg/chatvault_wasm.js";
import {
  ChatvaultError,
  Listeners,
  VAULT_METHODS,
  call,
  callJson,
  isJsonText,
  jsonText,
  proxyCall,
  proxyKv,
} from "./internal.js";
import { SharedVault } from "./shared.js";
import { SYNC_METHODS, Sync, WorkerSync, syncSettings } from "./sync.js";

export { ChatvaultError };
export { Sync, WorkerSync, SharedVault };

/** The package-internal method that wraps a binding sync handle. */
const ATTACH = Symbol("chatvault.attachSync");

/**
 * Where the binding with SQLite on OPFS is (`cargo xtask package` builds it
 * beside the default one). It is fetched only by a worker that opens an
 * "opfs-sqlite" vault, so pages that never do load the small binding only.
 */
const OPFS_BINDING = new URL("./pkg-opfs/chatvault_wasm.js", import.meta.url).href;

let binding = null;
let ready = null;

/**
 * Loads the WebAssembly module once (every entry point awaits it): the one
 * with SQLite when the first vault this realm opens asks for it, the
 * IndexedDB-only one otherwise.
 */
function load(backend) {
  ready ??= (async () => {
    let module = indexedDbBinding;
    if (backend === "opfs-sqlite") {
      try {
        module = await import(/* @vite-ignore */ OPFS_BINDING);
      } catch (e) {
        ready = null;
        throw new ChatvaultError(
          "unsupported",
          `the SQLite/OPFS binding did not load from ${OPFS_BINDING} (${e?.message ?? e}): serve the package's pkg-opfs/ ` +
            `(built by \`cargo xtask package\`) beside index.js, or use backend "indexeddb"`,
        );
      }
    }
    await module.default();
    binding = module;
  })();
  return ready;
}

/** Whether this code runs in a dedicated worker (where OPFS's sync access handles exist). */
function inDedicatedWorker() {
  return (
    typeof globalThis.DedicatedWorkerGlobalScope === "function" &&
    globalThis instanceof globalThis.DedicatedWorkerGlobalScope
  );
}

/**
 * Opens (creating on first use) the vault stored in the IndexedDB database
 * `name` (or, with `backend: "opfs-sqlite"`, the SQLite database `name` on
 * OPFS); encrypted with `passphrase` if given.
 */
export async function openVault(name, options = {}) {
  // SQLite on OPFS lives in one worker per origin: from a page, the tabs
  // share it (shared.js).
  if (options.backend === "opfs-sqlite" && !inDedicatedWorker() && globalThis.navigator?.locks) {
    return SharedVault.open(name, options);
  }
  if (options.worker) return WorkerVault.open(name, options);
  await load(options.backend);
  const inner = await call(
    binding.openVault(
      name,
      JSON.stringify({
        passphrase: options.passphrase,
        durability: options.durability,
        backend: options.backend,
      }),
    ),
  );
  return new Vault(inner);
}

/**
 * Whether this browser can give the vault the "opfs-sqlite" backend:
 * OPFS with sync access handles, which exist only in dedicated workers, so
 * from a page this asks whether it can start one (`worker: true`). It says
 * nothing of the build: the default binding has no SQLite, and
 * `openVault` then rejects with "unsupported" (see `OpenVaultOptions`).
 */
export function opfsAvailable() {
  if (typeof globalThis.navigator?.storage?.getDirectory !== "function") return false;
  if (inDedicatedWorker()) return typeof globalThis.FileSystemSyncAccessHandle === "function";
  return typeof globalThis.Worker === "function";
}

/**
 * A new device: signs in to the account on `options.server`, creates (or
 * opens) the vault `name` on the account's keys and starts syncing, which
 * brings the account's history. Resolves to `{vault, sync}`.
 */
export async function joinVault(name, options = {}) {
  if (options.worker) return WorkerVault.join(name, options);
  await load(options.backend);
  const [inner, syncInner] = await call(binding.joinVault(name, syncSettings(options)));
  const vault = new Vault(inner);
  return { vault, sync: await vault[ATTACH](syncInner) };
}

/** Opens a plain key-value namespace of `area` ("local", "session" or "indexeddb"). */
export async function openKv(area, namespace) {
  await load();
  return new Kv(await call(binding.openKv(area, namespace)));
}

/**
 * An open vault. Several tabs may open the same vault: writes from each
 * commit atomically (one IndexedDB transaction) with stamps no other tab
 * holds, and every tab hears of the others' writes through `subscribe`.
 */
export class Vault {
  #inner;
  #listeners = new Listeners();
  #channel = null;
  #sync = null;

  constructor(inner) {
    this.#inner = inner;
    // Tabs of this origin that opened the same vault share one channel;
    // messages carry ids and kinds only, never content.
    if (typeof BroadcastChannel === "function") {
      this.#channel = new BroadcastChannel(`chatvault:${inner.name}`);
      this.#channel.onmessage = (event) => this.#heard(event.data);
    }
  }

  /**
   * Calls `listener(change)` after every write to this vault: from this tab
   * (`source: "local"`) or another tab (`source: "tab"`). Returns the
   * function that unsubscribes. Listeners run after the write committed.
   */
  subscribe(listener) {
    return this.#listeners.add(listener);
  }

  #notify(change) {
    this.#listeners.emit(change);
  }

  /** Tells this tab's listeners and every other tab about a committed write. */
  #changed(change, source = "local") {
    this.#notify({ ...change, source });
    this.#channel?.postMessage(source === "sync" ? { ...change, source } : change);
  }

  #heard(change) {
    if (!change || typeof change.kind !== "string") return;
    this.#notify({ ...change, source: change.source === "sync" ? "sync" : "tab" });
    // Another tab started a new data key: this tab's keys are stale (it
    // could not read what is sealed with the new one), so it locks and the
    // app unlocks it again with the passphrase.
    if (change.kind === "key" && change.op === "rotate") this.lock();
  }

  #live() {
    if (!this.#inner) throw new ChatvaultError("locked", "the vault is locked: open it again");
    return this.#inner;
  }

  get name() {
    return this.#live().name;
  }

  get isEncrypted() {
    return this.#live().isEncrypted;
  }

  /**
   * Resolves if opening this vault with `passphrase` would succeed (none
   * for a plaintext vault); rejects as that open would otherwise.
   */
  checkPassphrase(passphrase) {
    return call(this.#live().checkPassphrase(passphrase));
  }

  async createConversation(input) {
    const value = typeof input === "string" ? { title: input } : input;
    const created = await callJson(this.#live().createConversation(JSON.stringify(value)));
    this.#changed({ kind: "conversation", op: "create", conversationId: created.id, ids: [created.id] });
    return created;
  }

  conversation(id) {
    return callJson(this.#live().conversation(id));
  }

  conversations(query = {}) {
    return callJson(this.#live().conversations(JSON.stringify(query)));
  }

  renameConversation(id, title) {
    return this.updateConversation(id, { title });
  }

  async pinConversation(id, pinned = true) {
    const current = await this.conversation(id);
    const metadata = { ...current.metadata, pinned };
    return this.updateConversation(id, { metadata });
  }

  async updateConversation(id, patch) {
    const updated = await callJson(this.#live().updateConversation(id, JSON.stringify(patch)));
    this.#changed({ kind: "conversation", op: "update", conversationId: id, ids: [id] });
    return updated;
  }

  async deleteConversation(id) {
    await call(this.#live().deleteConversation(id));
    this.#changed({ kind: "conversation", op: "delete", conversationId: id, ids: [id] });
  }

  async addMessage(conversationId, message) {
    const added = await callJson(this.#live().addMessage(conversationId, JSON.stringify(message)));
    this.#changed({ kind: "message", op: "create", conversationId, ids: [added.id] });
    return added;
  }

  async addMessages(conversationId, messages) {
    // From a proxy (`crossing`): the text goes in as it came, and what
    // the vault chose for each message goes back as text.
    if (isJsonText(messages)) {
      const text = await call(this.#live().addMessagesBrief(conversationId, messages.chatvaultJson));
      this.#changed({ kind: "message", op: "create", conversationId, ids: messages.ids });
      return jsonText(text);
    }
    const added = await callJson(this.#live().addMessages(conversationId, JSON.stringify(messages)));
    this.#changed({ kind: "message", op: "create", conversationId, ids: added.map((m) => m.id) });
    return added;
  }

  message(id) {
    return callJson(this.#live().message(id));
  }

  messages(conversationId, query = {}) {
    return callJson(this.#live().messages(conversationId, JSON.stringify(query)));
  }

  async editMessage(id, patch) {
    const value = typeof patch === "string" ? { content: patch } : patch;
    const edited = await callJson(this.#live().updateMessage(id, JSON.stringify(value)));
    this.#changed({ kind: "message", op: "update", conversationId: edited.conversationId, ids: [id] });
    return edited;
  }

  async deleteMessage(id) {
    // Read first: the change names the conversation, for live lists.
    const { conversationId } = await this.message(id);
    await call(this.#live().deleteMessage(id));
    this.#changed({ kind: "message", op: "delete", conversationId, ids: [id] });
  }

  /** Counts and sizes, with the browser's estimate of this origin's storage. */
  async stats() {
    const stats = await callJson(this.#live().stats());
    return { ...stats, storage: await storageEstimate() };
  }

  retentionPolicy() {
    return callJson(this.#live().retentionPolicy());
  }

  async setRetentionPolicy(policy) {
    await call(this.#live().setRetentionPolicy(JSON.stringify(policy ?? null)));
    this.#changed({ kind: "settings", op: "update", ids: [] });
  }

  planRetention(policy) {
    return callJson(this.#live().runRetention(JSON.stringify(policy), true));
  }

  async runRetention(policy) {
    const report = await callJson(this.#live().runRetention(JSON.stringify(policy), false));
    const ids = report.delete.map((d) => d.id);
    if (ids.length) this.#changed({ kind: "conversation", op: "delete", ids });
    return report;
  }

  /** Changes the passphrase; with sync started, on the server first (see `Sync`). */
  async changePassphrase(oldPassphrase, newPassphrase) {
    if (this.#sync) await this.#sync.changePassphrase(oldPassphrase, newPassphrase);
    else await call(this.#live().changePassphrase(oldPassphrase, newPassphrase));
    this.#changed({ kind: "key", op: "passphrase", ids: [] });
  }

  /** Starts a new data key; with sync started, on the server first. */
  async rotateDataKey(passphrase) {
    if (this.#sync) await this.#sync.rotateDataKey(passphrase);
    else await call(this.#live().rotateDataKey(passphrase));
    this.#changed({ kind: "key", op: "rotate", ids: [] });
  }

  /**
   * Syncs this (encrypted) vault with an account on a chatvault server:
   * `{server, username, passphrase?, create?, mode?, intervalSeconds?,
   * realtime?}`. Every tab may call it; one of them (a Web Lock) runs the
   * loop and the others follow. Resolves to the `Sync`, or `null` when
   * `mode` is `"resume"` and this browser has no saved sign-in.
   */
  async startSync(options) {
    if (this.#sync) {
      throw new ChatvaultError("invalid", "sync is already started for this vault: stop it first");
    }
    const inner = await call(this.#live().sync(syncSettings(options)));
    return inner ? this[ATTACH](inner) : null;
  }

  /** The started `Sync`, or `null`. */
  get sync() {
    return this.#sync;
  }

  /** Wraps the binding's sync handle (package-internal); resolves once its role is known. */
  async [ATTACH](inner) {
    const sync = new Sync(
      inner,
      this.name,
      (change) => this.#changed(change, "sync"),
      () => {
        if (this.#sync === sync) this.#sync = null;
      },
    );
    this.#sync = sync;
    // Writes from this tab and the others: the leader pushes them soon.
    const unsubscribe = this.subscribe((change) => {
      if (this.#sync !== sync) unsubscribe();
      else if (change.source !== "sync" && sync.isLeader) sync.notify();
    });
    await sync.ready;
    return sync;
  }

  /**
   * The whole vault as an export file (a Blob, built from 1 MiB parts as
   * the export runs: the file is never whole in the wasm heap), encrypted
   * under `passphrase` if given; `onProgress({phase, done, total})` as it goes.
   */
  async exportBlob(options = {}) {
    const [blob, report] = await call(this.#live().exportBlob(options.passphrase, options.onProgress));
    return { blob, report: JSON.parse(report) };
  }

  /**
   * Imports an export file (a File or Blob; `passphrase` for an encrypted
   * one). A damaged, truncated or foreign file changes nothing. In a
   * worker (`openVault(name, {worker: true})`) the file streams in.
   */
  async importFrom(file, options = {}) {
    // In a worker the file is read in slices as the import goes; a page's
    // main thread has no synchronous reader, so it reads the bytes first.
    const report =
      typeof FileReaderSync === "function"
        ? await callJson(this.#live().importBlob(file, options.passphrase, options.onProgress))
        : await callJson(
            this.#live().importBytes(new Uint8Array(await file.arrayBuffer()), options.passphrase, options.onProgress),
          );
    this.#changed({ kind: "conversation", op: "update", ids: [] });
    return report;
  }

  /** A key-value namespace of `area`, sealed by this vault's keys. */
  async sealedKv(area, namespace) {
    return new Kv(await call(this.#live().sealedKv(area, namespace)));
  }

  /** Locks the vault: sync stops, its keys leave memory; open it again to go on. */
  lock() {
    const inner = this.#inner;
    this.#inner = null;
    this.#sync?.stop();
    this.#sync = null;
    this.#channel?.close();
    this.#channel = null;
    inner?.free();
  }
}

export { VAULT_METHODS };
export { SYNC_METHODS };

/**
 * The same API as `Vault`, served by a dedicated Web Worker that holds the
 * vault (worker.js): unlocking and bulk writes never block the page.
 * Every call is one message there and back; answers and `ChatvaultError`s
 * are the same as in the page.
 */
export class WorkerVault {
  #worker;
  #pending = new Map();
  #next = 0;
  #listeners = new Listeners();
  #info;

  #sync = null;

  static async open(name, options) {
    const proxy = new WorkerVault();
    const { worker: _, ...rest } = options;
    try {
      proxy.#info = await proxy.#request({ op: "open", name, options: rest });
    } catch (e) {
      proxy.lock();
      throw e;
    }
    return proxy;
  }

  /** `joinVault` with the vault (and its sync) in a worker. */
  static async join(name, options) {
    const proxy = new WorkerVault();
    const { worker: _, ...rest } = options;
    try {
      const { vault, sync } = await proxy.#request({ op: "join", name, options: rest });
      proxy.#info = vault;
      return { vault: proxy, sync: proxy.#attach(sync) };
    } catch (e) {
      proxy.lock();
      throw e;
    }
  }

  /** `Vault.startSync`, run by the worker. */
  async startSync(options) {
    if (this.#sync) {
      throw new ChatvaultError("invalid", "sync is already started for this vault: stop it first");
    }
    const started = await this.#request({ op: "startSync", options });
    return started ? this.#attach(started) : null;
  }

  get sync() {
    return this.#sync;
  }

  #attach({ username, status }) {
    this.#sync = new WorkerSync(
      async (method, args) => {
        const result = await this.#request({ op: "sync", method, args });
        if (method === "stop" || method === "logout") this.#sync = null;
        return result;
      },
      username,
      status,
    );
    return this.#sync;
  }

  constructor() {
    this.#worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.#worker.onmessage = (event) => this.#answer(event.data);
    this.#worker.onerror = (event) => {
      const error = new ChatvaultError("unavailable", `the vault's worker failed: ${event.message}`);
      for (const { reject } of this.#pending.values()) reject(error);
      this.#pending.clear();
    };
  }

  #answer(message) {
    if (message.syncStatus) {
      this.#sync?.heard(message.syncStatus);
      if (message.syncStatus.role === "signedOut" || message.syncStatus.role === "stopped") {
        this.#sync = null;
      }
      return;
    }
    if (message.change) {
      this.#listeners.emit(message.change);
      return;
    }
    const waiting = this.#pending.get(message.id);
    if (!waiting) return;
    if (message.progress) {
      waiting.onProgress?.(message.progress);
      return;
    }
    this.#pending.delete(message.id);
    if (message.error) {
      waiting.reject(new ChatvaultError(message.error.code, message.error.message));
      if (message.error.code === "locked") this.lock();
    } else {
      waiting.resolve(message.ok);
    }
  }

  #request(message, onProgress = null) {
    if (!this.#worker) {
      return Promise.reject(new ChatvaultError("locked", "the vault is locked: open it again"));
    }
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      this.#worker.postMessage({ ...message, id });
    });
  }

  get name() {
    return this.#info.name;
  }

  get isEncrypted() {
    return this.#info.isEncrypted;
  }

  subscribe(listener) {
    return this.#listeners.add(listener);
  }

  async checkPassphrase(passphrase) {
    await this.#request({ op: "verify", passphrase });
  }

  /** A key-value namespace sealed in the worker ("indexeddb": workers have no web storage). */
  async sealedKv(area, namespace) {
    return proxyKv(area, namespace, (message) => this.#request(message));
  }

  // Every vault method, as one request to the worker. An `onProgress`
  // callback cannot cross to the worker: it stays here and the worker
  // sends the figures back.
  static {
    for (const method of VAULT_METHODS) {
      WorkerVault.prototype[method] = function (...args) {
        return proxyCall(method, args, (message, onProgress) => this.#request(message, onProgress));
      };
    }
  }

  /** Stops the worker, and with it the vault, its keys and its sync (another tab takes over). */
  lock() {
    this.#sync = null;
    this.#worker?.terminate();
    this.#worker = null;
    const error = new ChatvaultError("locked", "the vault is locked: open it again");
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }
}

/** One key-value namespace; values are strings. */
export class Kv {
  #inner;

  constructor(inner) {
    this.#inner = inner;
  }

  get namespace() {
    return this.#inner.namespace;
  }

  get(key) {
    return call(this.#inner.get(key));
  }

  set(key, value) {
    return call(this.#inner.set(key, value));
  }

  remove(key) {
    return call(this.#inner.remove(key));
  }

  keys() {
    return callJson(this.#inner.keys());
  }

  clear() {
    return call(this.#inner.clear());
  }

  usage() {
    return callJson(this.#inner.usage());
  }
}

/** The browser's estimate of this origin's storage, and whether it is persistent. */
export async function storageEstimate() {
  const storage = globalThis.navigator?.storage;
  if (!storage?.estimate) return { usage: null, quota: null, persisted: false };
  const { usage = null, quota = null } = await storage.estimate();
  const persisted = storage.persisted ? await storage.persisted() : false;
  return { usage, quota, persisted };
}

/**
 * Asks the browser to keep this origin's data under storage pressure
 * ("keep my data"); resolves to whether it will.
 */
export async function persistStorage() {
  const storage = globalThis.navigator?.storage;
  return storage?.persist ? storage.persist() : false;
}

/**
 * Moves the vault `name` from backend `options.from` to `options.to`
 * ("indexeddb" | "opfs-sqlite"): records stay sealed (no passphrase
 * needed), pending and parked changes keep their numbers, and the copy is
 * verified by counts; only then, with `deleteSource: true`, is the source
 * deleted. Close the vault first. With `worker: true` it runs in a
 * dedicated worker of its own (OPFS needs one). Resolves to the counts.
 */
export async function migrateVault(name, options = {}) {
  const { worker, onProgress, from, to, deleteSource, durability } = options;
  const settings = { from, to, deleteSource, durability };
  if (worker) return migrateInWorker(name, settings, onProgress);
  // Either end on OPFS needs the binding with SQLite.
  await load(from === "opfs-sqlite" || to === "opfs-sqlite" ? "opfs-sqlite" : from);
  return callJson(binding.migrateVault(name, JSON.stringify(settings), onProgress ?? undefined));
}

/** `migrateVault` in a worker started for it and stopped when it settles. */
function migrateInWorker(name, settings, onProgress) {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if (data.id !== 0) return;
      if (data.progress) {
        onProgress?.(data.progress);
        return;
      }
      worker.terminate();
      if (data.error) reject(new ChatvaultError(data.error.code, data.error.message));
      else resolve(data.ok);
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new ChatvaultError("unavailable", `the migration's worker failed: ${event.message}`));
    };
    worker.postMessage({ id: 0, op: "migrate", name, options: settings });
  });
}
