// One owner per origin for the SQLite/OPFS backend. OPFS access handles
// are exclusive: one worker of one tab can hold the database, and a second
// one fails at once ("busy"). So the tab holding the Web Lock
// `chatvault-opfs:<name>` (the leader) runs that worker, and every other tab
// of the vault (a follower) sends its calls to the leader over a
// BroadcastChannel and hears the changes back. When the leader closes (or
// locks its vault), the next tab in the lock's queue opens the database in
// its own worker, retrying while the old worker lets go of the files,
// announces itself, and every tab sends again the calls the old leader did
// not answer.
//
// Sending again cannot duplicate a write: creates carry ids chosen here
// before the first send (UUIDv7), and the vault answers a repeated create
// with what the first one stored (`NewMessage::id` on the Rust side); a
// repeated delete of what is already gone counts as done; edits, imports
// and reads give the same result twice. Passphrase changes and key
// rotations are not sent again: when the leader dies during one, its
// outcome is unknown, so it rejects with "unavailable" (check, then retry).
//
// channel messages (each carries `tab`, the sender's id; none carries a
// passphrase except `verify`, which stays within the origin):
//   {type: "hello"}                                  who leads?
//   {type: "leader"}                                 the sender leads now
//   {type: "request", to, id, message}               follower → leader
//   {type: "answer", to, id, ok | error | progress}  leader → follower
//   {type: "change", change}                         leader → all
//   {type: "syncStatus", syncStatus}                 leader → all

import { ChatvaultError, Listeners, VAULT_METHODS, proxyCall, proxyKv, uuidv7 } from "./internal.js";
import { WorkerSync } from "./sync.js";

/** Calls whose outcome cannot be checked by sending them again. */
const NOT_SENT_AGAIN = new Set(["changePassphrase", "rotateDataKey"]);

/** Calls that fail with "not_found" when sent again after they were done. */
const DELETES = new Set(["deleteMessage", "deleteConversation"]);

/** How long a new leader retries opening while the old worker lets go. */
const TAKEOVER_MS = 15_000;

const locked = () => new ChatvaultError("locked", "the vault is locked: open it again");

/** The records a vault call writes, as far as its arguments name them. */
function targets(message) {
  if (message.op !== "call") return [];
  const [first, second] = message.args;
  switch (message.method) {
    case "createConversation":
      return [first.id];
    case "addMessage":
      return [second.id];
    case "addMessages":
      return second.ids ?? [];
    case "renameConversation":
    case "pinConversation":
    case "updateConversation":
    case "deleteConversation":
    case "editMessage":
    case "deleteMessage":
      return [first];
    default:
      return [];
  }
}

/** Whether `change` is what one of `calls` (each with its `targets`) wrote. */
function madeBy(change, calls) {
  if (!change.ids?.length) return false;
  for (const { targets } of calls) {
    if (targets.size && change.ids.every((id) => targets.has(id))) return true;
  }
  return false;
}

/**
 * A vault on the "opfs-sqlite" backend, shared by every tab of the origin
 * that opens it: the same API as `Vault`, served by one tab's worker (see
 * the top of this file). A change is heard as `"local"` in the tab that
 * asked for it and as `"tab"` in the others (told apart by the records the
 * call names; a change with no ids, such as settings, is `"local"` in the
 * leader's tab).
 */
export class SharedVault {
  #name;
  #options;
  #tab = uuidv7();
  #channel;
  #abort = new AbortController();
  #release = null;
  #worker = null;
  #workerCalls = new Map();
  #nextWorkerCall = 0;
  /** The tab that leads (this one included), once it announced itself. */
  #leader = null;
  #calls = new Map();
  /** The followers' calls this (leading) tab's worker is running. */
  #serving = new Set();
  #next = 0;
  #listeners = new Listeners();
  #info = null;
  #sync = null;
  #syncOptions = null;
  #closed = false;

  /** Opens `name` as the leader, or through the leader once it answers. */
  static async open(name, options) {
    const vault = new SharedVault(name, options);
    try {
      vault.#info = await vault.#start();
    } catch (e) {
      vault.lock();
      throw e;
    }
    return vault;
  }

  constructor(name, options) {
    const { worker: _, ...rest } = options;
    this.#name = name;
    this.#options = rest;
    this.#channel = new BroadcastChannel(`chatvault-opfs:${name}`);
    this.#channel.onmessage = (event) => this.#heard(event.data);
  }

  /** Whether this tab's worker holds the database now. */
  get isLeader() {
    return this.#leader === this.#tab;
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

  /** `Vault.checkPassphrase`, answered by the leader's worker. */
  async checkPassphrase(passphrase) {
    await this.#request({ op: "verify", passphrase });
  }

  #start() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (how, value) => {
        if (settled) return;
        settled = true;
        how(value);
      };
      navigator.locks
        .request(`chatvault-opfs:${this.#name}`, { signal: this.#abort.signal }, async () => {
          if (this.#closed) return;
          try {
            settle(resolve, await this.#lead());
          } catch (e) {
            // A follower that took over and cannot open: its calls fail
            // and the next tab in the queue tries.
            if (settled) this.#fail(e);
            else settle(reject, e);
            return;
          }
          await new Promise((release) => {
            this.#release = release;
          });
        })
        .catch((e) => {
          if (e?.name !== "AbortError") settle(reject, e);
        });
      // Until this tab leads, it follows: the leader checks its passphrase.
      this.#channel.postMessage({ type: "hello", tab: this.#tab });
      this.#request({ op: "verify", passphrase: this.#options.passphrase }).then(
        (info) => settle(resolve, info),
        (e) => settle(reject, e),
      );
    });
  }

  /** Holding the lock: opens the database in this tab's worker, then serves. */
  async #lead() {
    this.#worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.#worker.onmessage = (event) => this.#fromWorker(event.data);
    this.#worker.onerror = (event) => {
      const error = new ChatvaultError("unavailable", `the vault's worker failed: ${event.message}`);
      for (const { reject } of this.#workerCalls.values()) reject(error);
      this.#workerCalls.clear();
    };
    const started = Date.now();
    let info;
    for (;;) {
      try {
        info = await this.#toWorker({ op: "open", name: this.#name, options: this.#options });
        break;
      } catch (e) {
        // The tab before this one is gone, but its worker may hold the
        // files a moment longer.
        if (e?.code !== "busy" || Date.now() - started > TAKEOVER_MS) throw e;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    this.#leader = this.#tab;
    this.#channel.postMessage({ type: "leader", tab: this.#tab });
    this.#sendAgain();
    return info;
  }

  #toWorker(message, onProgress = null) {
    if (!this.#worker) return Promise.reject(locked());
    const id = this.#nextWorkerCall++;
    return new Promise((resolve, reject) => {
      this.#workerCalls.set(id, { resolve, reject, onProgress });
      this.#worker.postMessage({ ...message, id });
    });
  }

  #fromWorker(message) {
    if (message.syncStatus) {
      this.#syncHeard(message.syncStatus);
      this.#channel?.postMessage({ type: "syncStatus", tab: this.#tab, syncStatus: message.syncStatus });
      return;
    }
    if (message.change) {
      const asked = madeBy(message.change, this.#serving) ? "tab" : message.change.source;
      this.#listeners.emit({ ...message.change, source: asked });
      this.#channel?.postMessage({ type: "change", tab: this.#tab, change: message.change });
      return;
    }
    const waiting = this.#workerCalls.get(message.id);
    if (!waiting) return;
    if (message.progress) {
      waiting.onProgress?.(message.progress);
      return;
    }
    this.#workerCalls.delete(message.id);
    if (message.error) waiting.reject(new ChatvaultError(message.error.code, message.error.message));
    else waiting.resolve(message.ok);
  }

  #heard(message) {
    if (!message || typeof message.type !== "string" || this.#closed) return;
    switch (message.type) {
      case "hello":
        if (this.isLeader) this.#channel.postMessage({ type: "leader", tab: this.#tab });
        break;
      case "leader":
        if (!this.isLeader && message.tab !== this.#leader) {
          this.#leader = message.tab;
          this.#sendAgain();
        }
        break;
      case "request":
        if (this.isLeader && message.to === this.#tab) this.#serve(message);
        break;
      case "answer":
        if (message.to === this.#tab) this.#settle(message.id, message);
        break;
      case "change":
        if (message.change.source === "sync") this.#listeners.emit(message.change);
        else {
          const asked = madeBy(message.change, this.#calls.values()) ? "local" : "tab";
          this.#listeners.emit({ ...message.change, source: asked });
        }
        break;
      case "syncStatus":
        this.#syncHeard(message.syncStatus);
        break;
    }
  }

  /** A follower's call, run by this (leading) tab's worker. */
  #serve({ tab, id, message }) {
    const serving = { targets: new Set(targets(message)) };
    this.#serving.add(serving);
    const answer = (fields) => {
      if (!("progress" in fields)) this.#serving.delete(serving);
      this.#channel?.postMessage({ type: "answer", tab: this.#tab, to: tab, id, ...fields });
    };
    this.#toWorker(message, (progress) => answer({ progress })).then(
      (ok) => answer({ ok }),
      (e) => answer({ error: { code: e?.code ?? "internal", message: String(e?.message ?? e) } }),
    );
  }

  #request(message, onProgress = null) {
    if (this.#closed) return Promise.reject(locked());
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const call = { message, resolve, reject, onProgress, to: null, again: false, targets: new Set(targets(message)) };
      this.#calls.set(id, call);
      this.#send(id, call);
    });
  }

  #send(id, call) {
    if (!this.#leader) return;
    call.to = this.#leader;
    if (this.isLeader) {
      this.#toWorker(call.message, call.onProgress).then(
        (ok) => this.#settle(id, { ok }),
        (error) => this.#settle(id, { error }),
      );
    } else {
      this.#channel.postMessage({ type: "request", tab: this.#tab, to: this.#leader, id, message: call.message });
    }
  }

  /** A new leader: sends it every call no leader answered. */
  #sendAgain() {
    for (const [id, call] of this.#calls) {
      if (call.to === this.#leader) continue;
      if (call.to !== null) {
        const method = call.message.method;
        if (NOT_SENT_AGAIN.has(method)) {
          this.#calls.delete(id);
          call.reject(
            new ChatvaultError(
              "unavailable",
              `the tab that held the vault closed during ${method}: it may or may not have been done; check, then retry`,
            ),
          );
          continue;
        }
        call.again = true;
      }
      this.#send(id, call);
    }
    // Sync ran in the old leader's worker: it starts again in the new one.
    if (this.#syncOptions && this.#sync) {
      this.#request({ op: "startSync", options: { ...this.#syncOptions, create: false }, join: true }).catch((e) =>
        this.#sync?.heard({ ...this.#sync.status, state: "error", error: e.message, errorCode: e.code ?? null }),
      );
    }
  }

  #settle(id, answer) {
    const call = this.#calls.get(id);
    if (!call) return;
    if (answer.progress) {
      call.onProgress?.(answer.progress);
      return;
    }
    this.#calls.delete(id);
    if (!answer.error) {
      call.resolve(answer.ok);
      return;
    }
    const error =
      answer.error instanceof ChatvaultError
        ? answer.error
        : new ChatvaultError(answer.error.code, answer.error.message);
    // Sent again after the old leader did it: what was asked holds.
    if (call.again && error.code === "not_found" && DELETES.has(call.message.method)) {
      call.resolve(undefined);
      return;
    }
    call.reject(error);
    if (error.code === "locked" && call.message.op !== "verify") this.lock();
  }

  /** This tab could not take the vault over: its calls fail with why. */
  #fail(error) {
    for (const { reject } of this.#calls.values()) reject(error);
    this.#calls.clear();
    this.lock();
  }

  /** A key-value namespace sealed by the vault ("indexeddb" area). */
  async sealedKv(area, namespace) {
    return proxyKv(area, namespace, (message) => this.#request(message));
  }

  /**
   * `Vault.startSync`, run by the leader's worker: the first tab's call
   * starts it, the others' join it, and each starts it again in the next
   * leader's worker (signing in again, without `create`).
   */
  async startSync(options) {
    if (this.#sync) {
      throw new ChatvaultError("invalid", "sync is already started for this vault: stop it first");
    }
    const started = await this.#request({ op: "startSync", options, join: true });
    if (!started) return null;
    this.#syncOptions = options;
    this.#sync = new WorkerSync(
      async (method, args) => {
        const result = await this.#request({ op: "sync", method, args });
        if (method === "stop" || method === "logout") this.#stopSync();
        return result;
      },
      started.username,
      started.status,
    );
    return this.#sync;
  }

  get sync() {
    return this.#sync;
  }

  #syncHeard(status) {
    this.#sync?.heard(status);
    if (status.role === "signedOut" || status.role === "stopped") this.#stopSync();
  }

  #stopSync() {
    this.#sync = null;
    this.#syncOptions = null;
  }

  /**
   * Closes this tab's handle. A leader's worker stops and lets go of the
   * database, and the next tab takes it over; calls not answered yet
   * reject with "locked".
   */
  lock() {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopSync();
    this.#abort.abort();
    this.#release?.();
    this.#worker?.terminate();
    this.#worker = null;
    for (const { reject } of this.#workerCalls.values()) reject(locked());
    this.#workerCalls.clear();
    for (const { reject } of this.#calls.values()) reject(locked());
    this.#calls.clear();
    this.#channel?.close();
    this.#channel = null;
  }

  static {
    // Every vault method, as one call to the leader; an `onProgress`
    // callback stays in this tab and hears the figures.
    for (const method of VAULT_METHODS) {
      SharedVault.prototype[method] = function (...args) {
        return proxyCall(method, args, (message, onProgress) => this.#request(message, onProgress));
      };
    }
    // The new passphrase is what this tab opens the database with when it
    // takes over; the other tabs' takeovers fail with "wrong_passphrase"
    // and they lock (as a rotation in another tab locks a Vault).
    const change = SharedVault.prototype.changePassphrase;
    SharedVault.prototype.changePassphrase = async function (oldPassphrase, newPassphrase) {
      await change.call(this, oldPassphrase, newPassphrase);
      this.#options = { ...this.#options, passphrase: newPassphrase };
    };
  }
}
