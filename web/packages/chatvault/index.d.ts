// chatvault for the browser. Times are numbers: milliseconds since the
// Unix epoch (pass them to `new Date(ms)` to display). Ids are UUIDv7 text.

/** Stable names of what went wrong (the Rust side's `code()`). */
export type ErrorCode =
  | "wrong_passphrase"
  | "locked"
  | "not_encrypted"
  | "not_found"
  | "invalid"
  | "storage_full"
  | "too_large"
  | "record_too_large"
  | "damaged"
  | "corrupt_record"
  | "corrupt_store"
  | "newer_schema"
  | "newer_format"
  | "unavailable"
  | "contended"
  | "linked_to_account"
  // A create's own id names other content, or a deleted record (see
  // `NewMessage.id`): nothing was written.
  | "id_taken"
  // The SQLite/OPFS database is held by another worker (see `backend`).
  | "busy"
  | "unsupported"
  // Another tab or process rotated the data key since this vault was
  // opened: nothing was written; open (unlock) it again.
  | "key_rotated"
  // Sync (the server's own codes, such as "rate_limited", pass through).
  | "offline"
  | "unauthorized"
  | "invalid_credentials"
  | "too_many_attempts"
  | "username_taken"
  | "clock_behind"
  | "stopped"
  | (string & {});

/** Every failure of this package: `code` is stable, `message` for people. */
export class ChatvaultError extends Error {
  readonly name: "ChatvaultError";
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions);
}

export type Role = "user" | "assistant" | "system" | "tool";
export type Metadata = Record<string, unknown>;

export interface Conversation {
  id: string;
  userId: string;
  title: string;
  createdAt: number;
  /** Last activity: the later of its own last edit and its newest message. */
  updatedAt: number;
  /** Version stamp (last-writer-wins across devices). */
  version: string;
  metadata: Metadata;
}

export interface Message {
  id: string;
  conversationId: string;
  role: Role;
  content: string;
  createdAt: number;
  updatedAt: number;
  version: string;
  metadata: Metadata;
}

/** One page of a listing; pass `nextCursor` back for the next one. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
  /** Ids stored in this range that cannot be read (damaged or tampered). */
  damaged?: string[];
}

export interface ConversationsQuery {
  /** 1–1000, default 50. */
  limit?: number;
  after?: string;
  /** Only conversations active at or after this time. */
  activeFrom?: number;
  /** Only conversations active at or before this time. */
  activeTo?: number;
}

export interface MessagesQuery {
  /** 1–1000, default 50. */
  limit?: number;
  /** Older than this cursor (the previous page's `nextCursor`). */
  before?: string;
}

export interface NewMessage {
  /**
   * The message's id (a UUID; UUIDv7 keeps messages created in one
   * millisecond in order), for creates that may be repeated: if the vault
   * already holds this message as given, the add answers it and writes
   * nothing; if the id names anything else, or a deleted message, the
   * whole add rejects with "id_taken". A new id when absent.
   */
  id?: string;
  role: Role;
  content: string;
  metadata?: Metadata;
}

export interface RetentionPolicy {
  maxAgeDays?: number;
  maxConversations?: number;
  maxBytes?: number;
}

export type RetentionReason = "age" | "count" | "bytes";

export interface RetentionPlan {
  /** Conversations deleted (with their messages), oldest first. */
  delete: { id: string; updatedAt: number; bytes: number; reason: RetentionReason }[];
  /** Conversations a limit selected but that are protected (e.g. unsynced). */
  kept: { id: string; updatedAt: number; bytes: number; selectedBy: RetentionReason; protection: string }[];
  bytesFreed: number;
  remainingConversations: number;
  remainingBytes: number;
}

/** A retention run's (or dry run's) report: its plan, flattened in. */
export interface RetentionReport extends RetentionPlan {
  policy: RetentionPolicy;
  now: number;
  dryRun: boolean;
  /** Only with sync configured do unsynced changes protect a conversation. */
  syncConfigured: boolean;
  /** The compaction that followed, when the deletions left the store mostly empty. */
  compaction?: { [field: string]: unknown };
}

/** How far an export or import got (units: records, or file bytes). */
export interface Progress {
  phase: "exporting" | "validating" | "importing" | "rekeying" | "migrating";
  done: number;
  total: number | null;
}

export interface ExportCounts {
  conversations: number;
  messages: number;
  tombstones: number;
}

export interface ExportReport {
  exportedAt: number;
  counts: ExportCounts;
  /** Bytes written (after encryption). */
  bytes: number;
  encrypted: boolean;
}

export interface ImportReport {
  /** "chatvault-export", or "app-export" for a seed-style app's file. */
  format: string;
  version: number;
  encrypted: boolean;
  /** Records in the file. */
  records: ExportCounts;
  /** Records written (newer than what the vault held). */
  imported: number;
  /** Records the vault already held at the same or a newer version. */
  skipped: number;
  /** Records refused (named in `rejections`). */
  rejected: number;
  rejections: { [field: string]: unknown }[];
}

export interface StorageEstimateInfo {
  /** Bytes this origin uses (all of its storage), or null if unknown. */
  usage: number | null;
  /** Bytes the browser lets this origin use, or null if unknown. */
  quota: number | null;
  /** Whether the browser keeps this origin's data under storage pressure. */
  persisted: boolean;
}

export interface VaultStats {
  backend: string;
  encrypted: boolean;
  conversations: number;
  messages: number;
  tombstones: number;
  pendingChanges: number;
  /** Bytes of stored content (after encryption). */
  bytes: number;
  perConversation: { id: string; updatedAt: number; messages: number; bytes: number; pending: boolean }[];
  storage: StorageEstimateInfo;
}

export interface OpenVaultOptions {
  /** Encrypt (first open) or unlock with this passphrase. */
  passphrase?: string;
  /** "strict" (default): a write is reported once on disk. */
  durability?: "strict" | "relaxed";
  /**
   * Run the vault in a dedicated Web Worker (a `WorkerVault` with the same
   * API): unlocking and bulk writes never block the page. Its `sealedKv`
   * offers the "indexeddb" area only (workers have no web storage).
   */
  worker?: boolean;
  /**
   * Where the vault's records live: "indexeddb" (default), or
   * "opfs-sqlite" — SQLite on the Origin Private File System, much faster
   * for bulk writes and reads. Its binding (pkg-opfs/, ~0.8 MB gzipped more
   * than the default one) is fetched only when such a vault is opened.
   *
   * OPFS gives one worker of one tab the database, so from a page this
   * resolves to a `SharedVault`: the tab holding a Web Lock runs the
   * worker and the other tabs' calls go to it; when it closes, another
   * tab takes over and sends the unanswered calls again (creates carry
   * their ids, so nothing is written twice; a passphrase change or key
   * rotation in flight rejects with "unavailable" instead). `worker` is
   * implied. From your own dedicated worker, the vault opens there
   * directly, and a second worker's open rejects with "busy".
   *
   * Where OPFS is missing (old browsers, some private windows) or
   * pkg-opfs/ is not served, `openVault` rejects with "unsupported". The
   * fallback is IndexedDB: `backend: opfsAvailable() ? "opfs-sqlite" :
   * "indexeddb"`, and on an "unsupported" rejection open again with
   * "indexeddb". The two backends are separate databases: `migrateVault`
   * moves a vault from one to the other.
   */
  backend?: "indexeddb" | "opfs-sqlite";
}

/** Opens (creating on first use) the vault in IndexedDB database `name`. */
export function openVault(name: string, options?: OpenVaultOptions): Promise<Vault>;

export type KvArea = "local" | "session" | "indexeddb";

/** Opens a plain key-value namespace (`[A-Za-z0-9._-]{1,64}`) of `area`. */
export function openKv(area: KvArea, namespace: string): Promise<Kv>;

/**
 * A committed write: from this tab (`"local"`), another tab of this
 * origin that opened the same vault (`"tab"`), or the sync server
 * (`"sync"`). Ids and kinds only.
 */
export interface VaultChange {
  /**
   * `"sync"`: changes pulled from the server (in any tab; `ids` is empty:
   * reload what is shown).
   */
  source: "local" | "tab" | "sync";
  kind: "conversation" | "message" | "settings" | "key" | "sync";
  op: "create" | "update" | "delete" | "passphrase" | "rotate" | "pull";
  /** The conversation concerned (absent for settings, keys, retention). */
  conversationId?: string;
  /** The records written. */
  ids: string[];
}

export class Vault {
  protected constructor();
  readonly name: string;
  readonly isEncrypted: boolean;

  /**
   * Resolves if opening this vault with `passphrase` (none for a plaintext
   * vault) would succeed; otherwise rejects as that open would
   * ("wrong_passphrase", "locked", "not_encrypted"). Writes nothing.
   */
  checkPassphrase(passphrase?: string): Promise<void>;

  /**
   * Calls `listener` after every committed write, from this tab or
   * another; returns the unsubscribe function (fits React's
   * `useSyncExternalStore`). A data-key rotation in another tab locks this
   * vault after notifying (unlock again with the passphrase).
   */
  subscribe(listener: (change: VaultChange) => void): () => void;

  /** With `id`, a repeated create answers the first one's conversation (see `NewMessage.id`). */
  createConversation(input: string | { id?: string; title: string; metadata?: Metadata }): Promise<Conversation>;
  conversation(id: string): Promise<Conversation>;
  /** Most recent activity first. */
  conversations(query?: ConversationsQuery): Promise<Page<Conversation>>;
  renameConversation(id: string, title: string): Promise<Conversation>;
  /** Sets `metadata.pinned`. */
  pinConversation(id: string, pinned?: boolean): Promise<Conversation>;
  updateConversation(id: string, patch: { title?: string; metadata?: Metadata }): Promise<Conversation>;
  deleteConversation(id: string): Promise<void>;

  addMessage(conversationId: string, message: NewMessage): Promise<Message>;
  /** Many messages to one conversation in one write (all or none). */
  addMessages(conversationId: string, messages: NewMessage[]): Promise<Message[]>;
  message(id: string): Promise<Message>;
  /** Newest first; page back with `before: page.nextCursor`. */
  messages(conversationId: string, query?: MessagesQuery): Promise<Page<Message>>;
  editMessage(id: string, patch: string | { content?: string; metadata?: Metadata }): Promise<Message>;
  deleteMessage(id: string): Promise<void>;

  stats(): Promise<VaultStats>;
  retentionPolicy(): Promise<RetentionPolicy | null>;
  setRetentionPolicy(policy: RetentionPolicy | null): Promise<void>;
  /** What `runRetention(policy)` would delete; deletes nothing. */
  planRetention(policy: RetentionPolicy): Promise<RetentionReport>;
  runRetention(policy: RetentionPolicy): Promise<RetentionReport>;

  /** The whole vault as an export file; encrypted under `passphrase` if given. */
  exportBlob(options?: { passphrase?: string; onProgress?: (progress: Progress) => void }): Promise<{
    blob: Blob;
    report: ExportReport;
  }>;
  /** Imports an export file; a damaged, truncated or foreign one changes nothing. */
  importFrom(
    file: Blob,
    options?: { passphrase?: string; onProgress?: (progress: Progress) => void },
  ): Promise<ImportReport>;

  /** With sync started, the server takes the change first (see `Sync.changePassphrase`). */
  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void>;
  /** With sync started, the server takes the new key first. */
  rotateDataKey(passphrase: string): Promise<void>;

  /**
   * Syncs this encrypted vault with an account on a chatvault server.
   * Every tab may call it: one (holding a Web Lock) runs the loop and the
   * realtime socket, the others follow its status and take over when it
   * closes. Resolves to `null` only for `mode: "resume"` without a saved
   * sign-in. Rejects with `invalid_credentials`, `wrong_passphrase`,
   * `username_taken`, `not_encrypted`, `offline`...
   */
  startSync(options: SyncOptions): Promise<Sync | null>;
  /** The started sync, or `null`. */
  readonly sync: Sync | null;

  /** A key-value namespace whose values are sealed by this vault's keys. */
  sealedKv(area: KvArea, namespace: string): Promise<Kv>;
  /** Drops the vault and its keys; later calls fail with code "locked". */
  lock(): void;
}

export interface SyncOptions {
  /** The server's base URL, e.g. `https://sync.example` (same site as the page). */
  server: string;
  username: string;
  /** Needed to create the account or sign in; not to resume a saved sign-in. */
  passphrase?: string;
  /** Create the account (first device); else sign in (or resume). */
  create?: boolean;
  /**
   * Overrides `create`: `"register"`, `"login"`, `"resume"` (the sign-in
   * saved in the vault, sealed, or `null`) or `"resumeOrLogin"` (default).
   */
  mode?: "register" | "login" | "resume" | "resumeOrLogin";
  /** Seconds between periodic syncs when idle (default 300). */
  intervalSeconds?: number;
  /** Hold the realtime WebSocket (default true). */
  realtime?: boolean;
}

export interface SyncStatus {
  /**
   * This tab's part: `"leader"` runs the loop, `"follower"` shows the
   * leader's status; `"stopped"` / `"signedOut"` after `stop` / `logout`.
   */
  role: "starting" | "leader" | "follower" | "stopped" | "signedOut";
  /** `"offline"`: the server cannot be reached (or the browser is offline). */
  state: "idle" | "syncing" | "offline" | "error";
  /** With `state: "error"`: why. */
  error: string | null;
  /**
   * The stable code of the failure shown: `"unauthorized"` means the
   * passphrase changed on another device — ask for it and call `signIn`.
   */
  errorCode: ErrorCode | null;
  lastSyncedAt: number | null;
  /** Local changes waiting to be pushed. */
  pending: number;
  /** Changes the server refused, kept until retried or discarded. */
  deadLetters: number;
  /** Why the last sync failed, until one succeeds. */
  lastError: string | null;
  /** Whether the realtime WebSocket is connected. */
  realtime: boolean;
  /** Records the leader has changed from the server since it started. */
  received: number;
}

export interface SyncReport {
  pushed: number;
  superseded: number;
  deadLettered: number;
  restamped: number;
  pulled: number;
  pages: number;
  skipped: number;
  resynced: boolean;
  dropped: number;
  requeued: number;
}

export interface DeadLetter {
  opId: string;
  kind: "conversation" | "message";
  entityId: string;
  conversationId?: string;
  version: string;
  delete: boolean;
  /** Stable code: `too_large`, `clock_skew`, `invalid`, `forbidden`... */
  reason: string;
  message: string;
  at: number;
  attempts: number;
  seq: number;
  /** When a clock-skew refusal is retried by itself (`null`: needs a person). */
  nextRetryAt: number | null;
}

export interface AccountSession {
  id: string;
  client: string;
  createdAt: number;
  lastUsedAt: number;
  /** This browser's session. */
  current: boolean;
}

/** A vault's sync with one account, in this tab (see `Vault.startSync`). */
export class Sync {
  protected constructor();
  readonly username: string | null;
  /** Whether this tab runs the loop. */
  readonly isLeader: boolean;
  readonly status: SyncStatus;
  /** `listener(status)` now and on every change; returns the unsubscribe function. */
  subscribe(listener: (status: SyncStatus) => void): () => void;
  /** Push soon (the leader's loop). Writes through the vault do this already. */
  notify(): void;
  /** Push then pull now, in the leader's tab. */
  syncNow(): Promise<SyncReport>;
  deadLetters(): Promise<DeadLetter[]>;
  retryDeadLetter(opId: string): Promise<boolean>;
  retryAllDeadLetters(): Promise<number>;
  /** Gives up on a refused change; the record stays here, unsynced. */
  discardDeadLetter(opId: string): Promise<DeadLetter | null>;
  /** After `unauthorized` (the passphrase changed on another device). */
  signIn(passphrase: string): Promise<void>;
  sessions(): Promise<AccountSession[]>;
  /** "Sign out everywhere else"; resolves to how many. */
  revokeOtherSessions(): Promise<number>;
  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void>;
  rotateDataKey(passphrase: string): Promise<void>;
  /** Ends this browser's session and stops sync in every tab; the vault stays usable. */
  logout(): Promise<void>;
  /** Stops sync in this tab (another tab that syncs takes over). */
  stop(): Promise<void>;
}

/** The same API as `Sync`, for a vault in a worker. */
export class WorkerSync extends Sync {}

/**
 * A new device: signs in, creates (or opens) the vault `name` on the
 * account's keys and starts syncing, which brings the history.
 */
export function joinVault(
  name: string,
  options: SyncOptions & { passphrase: string; worker?: boolean },
): Promise<{ vault: Vault; sync: Sync }>;

/** The methods a `WorkerSync` forwards to its worker. */
export const SYNC_METHODS: readonly string[];

/** The same API as `Vault`, served by a Web Worker (`openVault(name, { worker: true })`). */
export class WorkerVault extends Vault {}

/**
 * An "opfs-sqlite" vault opened from a page: shared by the origin's tabs,
 * served by the worker of the one holding its Web Lock (see
 * `OpenVaultOptions.backend`). A change is heard as `"local"` in the tab
 * that asked for it and as `"tab"` in the others (a change naming no
 * records, such as settings, is `"local"` in the leader's tab). `lock()`
 * closes this tab's handle; if it led, another tab takes over.
 */
export class SharedVault extends Vault {
  /** Whether this tab's worker holds the database now. */
  readonly isLeader: boolean;
}

/** The methods a `WorkerVault` forwards to its worker. */
export const VAULT_METHODS: readonly string[];

/** One key-value namespace: whole-value writes, a size guard, text values. */
export class Kv {
  private constructor();
  readonly namespace: string;
  get(key: string): Promise<string | null>;
  /** Rejects with "too_large" (size guard) or "storage_full"; the old value stays. */
  set(key: string, value: string): Promise<void>;
  remove(key: string): Promise<void>;
  keys(): Promise<string[]>;
  clear(): Promise<void>;
  usage(): Promise<{ entries: number; bytes: number }>;
}

export function storageEstimate(): Promise<StorageEstimateInfo>;
/**
 * Whether the browser can host the "opfs-sqlite" backend (OPFS sync access
 * handles in a dedicated worker); not whether this build includes SQLite.
 */
export function opfsAvailable(): boolean;
/** Asks the browser to keep this origin's data ("keep my data"). */
export function persistStorage(): Promise<boolean>;

export interface MigrateVaultOptions {
  /** The backend the vault is in now. */
  from: "indexeddb" | "opfs-sqlite";
  /** The backend to move it to (the other one; the same database name). */
  to: "indexeddb" | "opfs-sqlite";
  /**
   * Delete the source database once the copy is verified (default false:
   * the source stays, and stays the vault until you open the target).
   */
  deleteSource?: boolean;
  /** The target's durability, as for `openVault`. */
  durability?: "strict" | "relaxed";
  /**
   * Run in a dedicated worker started for the migration (needed from a
   * page when either backend is "opfs-sqlite").
   */
  worker?: boolean;
  /** Rows copied so far (`phase: "migrating"`; units: records, tombstones, outbox entries). */
  onProgress?: (progress: Progress) => void;
}

/** What a migration copied, verified against the source's own counts. */
export interface MigrationReport {
  conversations: number;
  messages: number;
  tombstones: number;
  deletionMarks: number;
  /** Changes waiting to sync: the same ones, with the same numbers, after the move. */
  pendingChanges: number;
  /** Changes the server refused, still parked after the move. */
  parkedChanges: number;
  metaEntries: number;
  /** Stored (sealed) body bytes. */
  bytes: number;
  batches: number;
  /** The target held an unfinished earlier migration, which was started over. */
  restarted: boolean;
  /** The source database was deleted (`deleteSource`). */
  sourceDeleted: boolean;
}

/**
 * Moves the vault `name` between backends, whole and exactly: records stay
 * sealed (no passphrase needed), pending and parked changes keep their
 * numbers so sync sends exactly what it would have, and the copy is
 * verified by counts before `deleteSource` deletes the source. Close the
 * vault first (in every tab). Rejects with "target_not_empty" (the target
 * already holds a vault: nothing copied), "incomplete_migration",
 * "copy_mismatch", "unsupported" (no SQLite in this build, or OPFS outside
 * a worker: pass `worker: true`). A migration that stopped midway leaves
 * the target unopenable ("incomplete_migration") and the source intact;
 * calling `migrateVault` again starts it over.
 */
export function migrateVault(name: string, options: MigrateVaultOptions): Promise<MigrationReport>;
