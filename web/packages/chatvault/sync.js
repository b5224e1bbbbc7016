// Sync for the browser package: one vault kept in step with one account
// on a chatvault server, shared by every tab of the app.
//
// Every tab that calls `vault.startSync(...)` gets a `Sync`, but exactly
// one of them — the holder of the Web Lock `chatvault-sync:<vault name>` —
// runs the sync loop and holds the realtime WebSocket (the "leader"). The
// others ("followers") wait in the lock's queue: when the leader's tab (or
// worker) closes, the browser releases its lock and the next tab takes
// over at once, with nothing to hand over — the outbox, the cursor and
// the saved session all live in the vault's IndexedDB database.
//
// The tabs talk over a BroadcastChannel `chatvault-sync:<vault name>`
// (ids, counts and states only; never content or keys):
//   leader → all:     {type: "status", status}
//   follower → all:   {type: "hello"}                (asks for the status)
//                     {type: "notify"}               (push soon)
//                     {type: "syncNow", id, from}    (the leader syncs, then
//   leader → all:     {type: "syncNowDone", id, to, report | error}
//   any → all:        {type: "signedOut"}            (a logout: all stop)
//                     {type: "signedIn"}             (a new sign-in is saved
//                                                     in the vault: the leader
//                                                     adopts it)
// A follower's own writes need no message: the leader hears them through
// the vault's change channel and pushes them.
//
// Changes sync brings in reach every tab as a vault change with
// `source: "sync"` (the leader's status counts them in `received`).

import { ChatvaultError, Listeners, call, callJson } from "./internal.js";

/** How long a follower waits for the leader to answer a `syncNow`. */
const FORWARD_TIMEOUT_MS = 60_000;

/** The status before anything is known. */
const INITIAL_STATUS = Object.freeze({
  role: "starting",
  state: "idle",
  error: null,
  errorCode: null,
  lastSyncedAt: null,
  pending: 0,
  deadLetters: 0,
  lastError: null,
  realtime: false,
  received: 0,
});

/** The JSON the binding's `sync` / `joinVault` take, from the package's options. */
export function syncSettings(options) {
  if (!options || typeof options !== "object") {
    throw new ChatvaultError("invalid", "sync options: expected {server, username, passphrase?}");
  }
  const { server, username, passphrase, create, mode, intervalSeconds, realtime } = options;
  return JSON.stringify({
    server,
    username,
    passphrase,
    mode: mode ?? (create ? "register" : "resumeOrLogin"),
    intervalSeconds,
    realtime,
  });
}

function webLocks() {
  return globalThis.navigator?.locks?.request ? globalThis.navigator.locks : null;
}

function failureOf(e) {
  return { code: typeof e?.code === "string" ? e.code : "internal", message: String(e?.message ?? e) };
}

/**
 * A vault's sync with one account, in this tab. Created by
 * `vault.startSync(...)` (or `joinVault`); see `index.d.ts` for the API.
 */
export class Sync {
  #inner;
  #channel;
  #emit;
  #lockName;
  #status = INITIAL_STATUS;
  #listeners = new Listeners();
  #abort = new AbortController();
  #release = null;
  #stopped = false;
  #forwarded = new Map();
  #next = 0;
  #tab = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  #received = 0;
  #onStopped;

  /**
   * @param inner the binding's WasmSync
   * @param vaultName the vault's database name
   * @param emit `(change) => void`: tells the vault's listeners (and the
   *   other tabs) about changes sync brought in
   * @param onStopped called once when this Sync stops for good
   */
  constructor(inner, vaultName, emit, onStopped = () => {}) {
    this.#inner = inner;
    this.#emit = emit;
    this.#onStopped = onStopped;
    this.#lockName = `chatvault-sync:${vaultName}`;
    this.#channel =
      typeof BroadcastChannel === "function" ? new BroadcastChannel(`chatvault-sync:${vaultName}`) : null;
    if (this.#channel) this.#channel.onmessage = (event) => this.#heard(event.data);
    inner.onStatus((text) => this.#own(JSON.parse(text)));
    /** Resolves once this tab knows whether it leads or follows. */
    this.ready = this.#campaign();
  }

  /** The account name. */
  get username() {
    return this.#inner?.username ?? null;
  }

  /** Whether this tab runs the sync loop (holds the lock). */
  get isLeader() {
    return this.#status.role === "leader";
  }

  /** The latest status (this tab's role, and the leader's sync state). */
  get status() {
    return this.#status;
  }

  /**
   * Calls `listener(status)` on every status change (and once now);
   * returns the function that unsubscribes.
   */
  subscribe(listener) {
    return this.#listeners.addWithCurrent(listener, () => this.#status);
  }

  /** Tells the leader the vault was written: it pushes soon. */
  notify() {
    if (this.isLeader) this.#inner.notify();
    else this.#post({ type: "notify" });
  }

  /** Pushes, then pulls, now (in the leader's tab); resolves to what it did. */
  async syncNow() {
    this.#live();
    if (this.isLeader) return callJson(this.#inner.syncNow());
    const id = `${this.#tab}:${this.#next++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#forwarded.delete(id);
        reject(new ChatvaultError("unavailable", "the tab that syncs did not answer"));
      }, FORWARD_TIMEOUT_MS);
      this.#forwarded.set(id, { resolve, reject, timer });
      this.#post({ type: "syncNow", id, from: this.#tab });
    });
  }

  /** Changes the server refused, oldest first. */
  deadLetters() {
    return callJson(this.#live().deadLetters());
  }

  /** Sends a refused change again (by op id); resolves to whether there was one. */
  async retryDeadLetter(opId) {
    const found = await call(this.#live().retryDeadLetter(opId));
    if (found) this.notify();
    return found;
  }

  /** Sends every refused change again; resolves to how many. */
  async retryAllDeadLetters() {
    const count = await call(this.#live().retryAllDeadLetters());
    if (count) this.notify();
    return count;
  }

  /** Gives up on a refused change (the record stays here, unsynced). */
  async discardDeadLetter(opId) {
    const discarded = await callJson(this.#live().discardDeadLetter(opId));
    return discarded ? discarded[0] : null;
  }

  /**
   * Signs in again with the current passphrase (after `unauthorized`: the
   * passphrase was changed on another device). In a follower tab the
   * leader then adopts the new sign-in from the vault and syncs again.
   */
  async signIn(passphrase) {
    await call(this.#live().signIn(passphrase));
    if (this.isLeader) this.#inner.notify();
    else this.#post({ type: "signedIn" });
  }

  /** The account's sessions, most recently used first. */
  sessions() {
    return callJson(this.#live().sessions());
  }

  /** Signs out every other session of the account; resolves to how many. */
  revokeOtherSessions() {
    return call(this.#live().revokeOtherSessions());
  }

  /** Changes the passphrase on the server first, then in the vault. */
  changePassphrase(oldPassphrase, newPassphrase) {
    return call(this.#live().changePassphrase(oldPassphrase, newPassphrase));
  }

  /** Starts a new data key on the server first, then in the vault. */
  rotateDataKey(passphrase) {
    return call(this.#live().rotateDataKey(passphrase));
  }

  /**
   * Ends this browser's session on the server and stops sync in every
   * tab of this vault (they share the session cookie). The vault stays
   * open and usable offline.
   */
  async logout() {
    const inner = this.#live();
    this.#post({ type: "signedOut" });
    try {
      await call(inner.logout());
    } finally {
      await this.#shutdown("signedOut");
    }
  }

  /** Stops sync in this tab (another tab takes over if it syncs too). */
  stop() {
    return this.#shutdown("stopped");
  }

  // ---- leadership ------------------------------------------------------

  /**
   * Takes the lock if it is free (leader), else queues for it (follower);
   * resolves once the role is known.
   */
  #campaign() {
    const locks = webLocks();
    if (!locks) {
      // No Web Locks (an old browser): every tab leads; the server's
      // idempotent push and last-writer-wins keep that safe, only wasteful.
      this.#lead();
      return Promise.resolve();
    }
    return new Promise((known) => {
      const hold = () => {
        if (this.#stopped) return undefined;
        return new Promise((release) => {
          this.#release = release;
          this.#lead();
          known();
        });
      };
      const failed = (e) => {
        if (e?.name !== "AbortError") console.error("chatvault: cannot wait for the sync lock", e);
        known();
      };
      locks
        .request(this.#lockName, { ifAvailable: true }, (lock) => {
          if (lock) return hold();
          // Another tab syncs: follow it, and queue to take over.
          this.#setStatus({ ...this.#status, role: "follower" });
          this.#post({ type: "hello" });
          known();
          locks.request(this.#lockName, { signal: this.#abort.signal }, hold).catch(failed);
          return null;
        })
        .catch(failed);
    });
  }

  #lead() {
    this.#inner.start();
    this.#setStatus({ ...this.#status, role: "leader" });
    this.#publish();
    // Requests this tab forwarded to a leader that went away: run them here.
    for (const [id, waiting] of [...this.#forwarded]) {
      this.#forwarded.delete(id);
      clearTimeout(waiting.timer);
      callJson(this.#inner.syncNow()).then(waiting.resolve, waiting.reject);
    }
  }

  async #shutdown(role) {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#abort.abort();
    const inner = this.#inner;
    this.#inner = null;
    try {
      await inner?.stop();
    } finally {
      this.#release?.();
      this.#release = null;
      this.#channel?.close();
      this.#channel = null;
      for (const { reject, timer } of this.#forwarded.values()) {
        clearTimeout(timer);
        reject(new ChatvaultError("stopped", "sync was stopped"));
      }
      this.#forwarded.clear();
      this.#setStatus({ ...this.#status, role, realtime: false });
      inner?.free();
      this.#onStopped();
    }
  }

  #live() {
    if (!this.#inner) throw new ChatvaultError("stopped", "sync was stopped: start it again");
    return this.#inner;
  }

  // ---- status ----------------------------------------------------------

  /** This tab's client status: shown (and shared) only by the leader. */
  #own(status) {
    if (this.#status.role !== "leader") return;
    if (status.received > this.#received) {
      this.#received = status.received;
      this.#emit({ kind: "sync", op: "pull", ids: [] });
    }
    this.#setStatus({ ...status, role: "leader" });
    this.#publish();
  }

  #publish() {
    const { role: _, ...status } = this.#status;
    this.#post({ type: "status", status });
  }

  #setStatus(status) {
    this.#status = Object.freeze(status);
    this.#listeners.emit(this.#status);
  }

  // ---- the other tabs --------------------------------------------------

  #post(message) {
    this.#channel?.postMessage(message);
  }

  #heard(message) {
    if (!message || typeof message.type !== "string" || this.#stopped) return;
    const leading = this.isLeader;
    switch (message.type) {
      case "status":
        if (!leading) this.#setStatus({ ...message.status, role: "follower" });
        break;
      case "hello":
        if (leading) this.#publish();
        break;
      case "notify":
        if (leading) this.#inner.notify();
        break;
      case "syncNow":
        if (leading) {
          callJson(this.#inner.syncNow()).then(
            (report) => this.#post({ type: "syncNowDone", id: message.id, to: message.from, report }),
            (e) => this.#post({ type: "syncNowDone", id: message.id, to: message.from, error: failureOf(e) }),
          );
        }
        break;
      case "syncNowDone": {
        const waiting = message.to === this.#tab && this.#forwarded.get(message.id);
        if (!waiting) break;
        this.#forwarded.delete(message.id);
        clearTimeout(waiting.timer);
        if (message.error) waiting.reject(new ChatvaultError(message.error.code, message.error.message));
        else waiting.resolve(message.report);
        break;
      }
      case "signedIn":
        if (leading) {
          call(this.#inner.reloadSavedSession()).catch((e) =>
            console.error("chatvault: cannot adopt the new sign-in", e),
          );
        }
        break;
      case "signedOut":
        // The shared session cookie is gone: a tab that went on would sign
        // back in with its saved key, undoing the logout.
        this.#shutdown("signedOut");
        break;
      default:
        break;
    }
  }
}

/** The methods a `WorkerSync` forwards (worker.js accepts the same list). */
export const SYNC_METHODS = Object.freeze([
  "notify",
  "syncNow",
  "deadLetters",
  "retryDeadLetter",
  "retryAllDeadLetters",
  "discardDeadLetter",
  "signIn",
  "sessions",
  "revokeOtherSessions",
  "changePassphrase",
  "rotateDataKey",
  "logout",
  "stop",
]);

/**
 * The same API as `Sync`, for a vault in a worker (`WorkerVault`): every
 * call is a message to the worker, where the `Sync` lives; the status
 * comes back as messages.
 */
export class WorkerSync {
  #request;
  #status;
  #listeners = new Listeners();
  #username;

  /** @param request `(method, args) => Promise` to the worker's Sync */
  constructor(request, username, status) {
    this.#request = request;
    this.#username = username;
    this.#status = Object.freeze(status);
  }

  /** Called by the WorkerVault with each status the worker sends. */
  heard(status) {
    this.#status = Object.freeze(status);
    this.#listeners.emit(this.#status);
  }

  get username() {
    return this.#username;
  }

  get isLeader() {
    return this.#status.role === "leader";
  }

  get status() {
    return this.#status;
  }

  subscribe(listener) {
    return this.#listeners.addWithCurrent(listener, () => this.#status);
  }

  static {
    for (const method of SYNC_METHODS) {
      WorkerSync.prototype[method] = function (...args) {
        return this.#request(method, args);
      };
    }
  }
}
