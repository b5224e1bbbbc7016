// chatvault for the browser: the typed API over the WebAssembly binding.
// The binding (pkg/, built by `cargo xtask package`) takes and returns JSON
// text and rejects with {code, message}; this module gives people objects,
// ChatvaultError instances and one place where the shapes are documented
// (index.d.ts). Times are plain numbers: milliseconds since the epoch.

import init, * as binding from "./pkg/chatvault_wasm.js";

let ready = null;

/** Loads the WebAssembly module once (every entry point awaits it). */
function load() {
  ready ??= init();
  return ready;
}

/** An error from chatvault, with the stable `code` of the Rust side. */
export class ChatvaultError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = "ChatvaultError";
    this.code = code;
  }
}

/** The binding's rejection as a ChatvaultError (anything else as it was). */
function wrapError(e) {
  if (e instanceof ChatvaultError) return e;
  if (e && typeof e === "object" && typeof e.code === "string") {
    return new ChatvaultError(e.code, e.message ?? e.code);
  }
  return e;
}

async function call(promise) {
  try {
    return await promise;
  } catch (e) {
    throw wrapError(e);
  }
}

async function callJson(promise) {
  const text = await call(promise);
  return text === undefined || text === null ? text : JSON.parse(text);
}

/**
 * Opens (creating on first use) the vault stored in the IndexedDB database
 * `name`; encrypted with `passphrase` if given.
 */
export async function openVault(name, options = {}) {
  await load();
  const inner = await call(
    binding.openVault(
      name,
      JSON.stringify({
        passphrase: options.passphrase,
        durability: options.durability,
      }),
    ),
  );
  return new Vault(inner);
}

/** Opens a plain key-value namespace of `area` ("local", "session" or "indexeddb"). */
export async function openKv(area, namespace) {
  await load();
  return new Kv(await call(binding.openKv(area, namespace)));
}

/** An open vault. */
export class Vault {
  #inner;

  constructor(inner) {
    this.#inner = inner;
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

  createConversation(input) {
    const value = typeof input === "string" ? { title: input } : input;
    return callJson(this.#live().createConversation(JSON.stringify(value)));
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

  updateConversation(id, patch) {
    return callJson(this.#live().updateConversation(id, JSON.stringify(patch)));
  }

  deleteConversation(id) {
    return call(this.#live().deleteConversation(id));
  }

  addMessage(conversationId, message) {
    return callJson(this.#live().addMessage(conversationId, JSON.stringify(message)));
  }

  addMessages(conversationId, messages) {
    return callJson(this.#live().addMessages(conversationId, JSON.stringify(messages)));
  }

  message(id) {
    return callJson(this.#live().message(id));
  }

  messages(conversationId, query = {}) {
    return callJson(this.#live().messages(conversationId, JSON.stringify(query)));
  }

  editMessage(id, patch) {
    const value = typeof patch === "string" ? { content: patch } : patch;
    return callJson(this.#live().updateMessage(id, JSON.stringify(value)));
  }

  deleteMessage(id) {
    return call(this.#live().deleteMessage(id));
  }

  /** Counts and sizes, with the browser's estimate of this origin's storage. */
  async stats() {
    const stats = await callJson(this.#live().stats());
    return { ...stats, storage: await storageEstimate() };
  }

  retentionPolicy() {
    return callJson(this.#live().retentionPolicy());
  }

  setRetentionPolicy(policy) {
    return call(this.#live().setRetentionPolicy(JSON.stringify(policy ?? null)));
  }

  planRetention(policy) {
    return callJson(this.#live().runRetention(JSON.stringify(policy), true));
  }

  runRetention(policy) {
    return callJson(this.#live().runRetention(JSON.stringify(policy), false));
  }

  changePassphrase(oldPassphrase, newPassphrase) {
    return call(this.#live().changePassphrase(oldPassphrase, newPassphrase));
  }

  rotateDataKey(passphrase) {
    return call(this.#live().rotateDataKey(passphrase));
  }

  /** A key-value namespace of `area`, sealed by this vault's keys. */
  async sealedKv(area, namespace) {
    return new Kv(await call(this.#live().sealedKv(area, namespace)));
  }

  /** Locks the vault: its keys leave memory; open it again to go on. */
  lock() {
    const inner = this.#inner;
    this.#inner = null;
    inner?.free();
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
