// Who is signed in on this device, and the open vault and its sync.
//
// The device remembers, in localStorage, which usernames it has a vault
// for (each vault is its own IndexedDB database, encrypted under the
// account's keys) and who used it last; nothing secret is kept there. The
// vault runs in a Web Worker, so Argon2id and bulk writes never block the
// page.

import { create } from "zustand";
import { ChatvaultError, joinVault, openVault, type Sync, type Vault } from "chatvault";
import { createUiStore, type UiStore } from "./ui";

const ACCOUNTS_KEY = "chatvault-demo.accounts";
const CURRENT_KEY = "chatvault-demo.current";

/** usernames -> the name of their vault's database on this device. */
type Accounts = Record<string, string>;

function readAccounts(): Accounts {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(ACCOUNTS_KEY) ?? "{}");
    return parsed && typeof parsed === "object" ? (parsed as Accounts) : {};
  } catch {
    return {};
  }
}

function remember(username: string, vaultName: string): void {
  const accounts = readAccounts();
  accounts[username] = vaultName;
  localStorage.setItem(ACCOUNTS_KEY, JSON.stringify(accounts));
  localStorage.setItem(CURRENT_KEY, username);
}

function forgetVault(username: string, vaultName: string): void {
  const accounts = readAccounts();
  if (accounts[username] === vaultName) delete accounts[username];
  localStorage.setItem(ACCOUNTS_KEY, JSON.stringify(accounts));
  if (localStorage.getItem(CURRENT_KEY) === username) localStorage.removeItem(CURRENT_KEY);
  // Best effort: the database was created by an attempt that failed.
  indexedDB.deleteDatabase(vaultName);
}

function currentUser(): string | null {
  const name = localStorage.getItem(CURRENT_KEY);
  return name && readAccounts()[name] ? name : null;
}

function newVaultName(username: string): string {
  return `chatvault-demo-${username}-${crypto.randomUUID().slice(0, 8)}`;
}

/** A message for people from any failure. */
export function describe(error: unknown): string {
  if (error instanceof ChatvaultError || (error && typeof error === "object" && "code" in error)) {
    const { code, message } = error as { code: string; message: string };
    switch (code) {
      case "wrong_passphrase":
        return "Wrong passphrase.";
      case "invalid_credentials":
        return "Wrong username or passphrase.";
      case "username_taken":
        return "That username is taken. Choose another, or sign in.";
      case "too_many_attempts":
      case "rate_limited":
        return "Too many attempts. Wait a minute and try again.";
      case "offline":
      case "unavailable":
        return "The server cannot be reached. Check your connection and try again.";
      case "damaged":
      case "corrupt_record":
        return "This file is damaged or was changed after it was exported. Nothing was imported.";
      case "storage_full":
        return "The browser's storage for this site is full. Free some space (Settings → Retention) and try again.";
      default:
        return message || code;
    }
  }
  return error instanceof Error ? error.message : String(error);
}

export type Phase = "welcome" | "unlock" | "ready";

export interface Session {
  phase: Phase;
  /** The signed-in username (also while locked). */
  username: string | null;
  vault: Vault | null;
  sync: Sync | null;
  /** The unlocked vault's UI state (selection, drafts), sealed in the vault. */
  ui: UiStore | null;
  busy: boolean;
  error: string | null;
  /** A non-blocking notice (e.g. sync could not start: offline). */
  notice: string | null;
  register(username: string, passphrase: string): Promise<void>;
  signIn(username: string, passphrase: string): Promise<void>;
  unlock(passphrase: string): Promise<void>;
  lock(): Promise<void>;
  /** Another tab rotated the data key: this tab's vault locked itself. */
  lockedElsewhere(): void;
  logout(): Promise<void>;
  /** Start sync again after it could not start (offline at unlock). */
  resumeSync(): Promise<void>;
  switchAccount(): void;
  clearError(): void;
}

const server = (): string => location.origin;

export const useSession = create<Session>()((set, get) => {
  /** Runs `work` with `busy` set; its failure becomes `error`. */
  async function attempt(work: () => Promise<void>): Promise<void> {
    if (get().busy) return;
    set({ busy: true, error: null });
    try {
      await work();
    } catch (error) {
      set({ error: describe(error) });
    } finally {
      set({ busy: false });
    }
  }

  async function enter(username: string, vault: Vault, sync: Sync | null, notice: string | null = null) {
    const ui = createUiStore(vault.sealedKv("indexeddb", "demo-ui"));
    await ui.persist.rehydrate();
    set({ phase: "ready", username, vault, sync, ui, notice });
  }

  return {
    phase: currentUser() ? "unlock" : "welcome",
    username: currentUser(),
    vault: null,
    sync: null,
    ui: null,
    busy: false,
    error: null,
    notice: null,

    register: (username, passphrase) =>
      attempt(async () => {
        if (readAccounts()[username]) {
          throw new Error(`This device already has ${username}'s vault: sign in instead.`);
        }
        const name = newVaultName(username);
        const vault = await openVault(name, { passphrase, worker: true });
        let sync: Sync | null;
        try {
          sync = await vault.startSync({ server: server(), username, passphrase, mode: "register" });
        } catch (error) {
          vault.lock();
          forgetVault(username, name);
          throw error;
        }
        remember(username, name);
        await enter(username, vault, sync);
      }),

    signIn: (username, passphrase) =>
      attempt(async () => {
        const known = readAccounts()[username];
        if (known) {
          // This device has the vault already: unlock it and sign in.
          localStorage.setItem(CURRENT_KEY, username);
          set({ username });
          const vault = await openVault(known, { passphrase, worker: true });
          const sync = await vault
            .startSync({ server: server(), username, passphrase, mode: "login" })
            .catch((error) => {
              vault.lock();
              throw error;
            });
          await enter(username, vault, sync);
          return;
        }
        const name = newVaultName(username);
        try {
          const { vault, sync } = await joinVault(name, { server: server(), username, passphrase, worker: true });
          remember(username, name);
          await enter(username, vault, sync);
        } catch (error) {
          forgetVault(username, name);
          throw error;
        }
      }),

    unlock: (passphrase) =>
      attempt(async () => {
        const username = get().username;
        const name = username ? readAccounts()[username] : undefined;
        if (!username || !name) {
          set({ phase: "welcome" });
          return;
        }
        const vault = await openVault(name, { passphrase, worker: true });
        try {
          const sync = await vault.startSync({ server: server(), username, passphrase, mode: "resumeOrLogin" });
          await enter(username, vault, sync);
        } catch (error) {
          const code = (error as { code?: string }).code;
          if (code === "offline" || code === "unavailable") {
            // Local-first: the vault works offline; sync starts when back.
            await enter(username, vault, null, "Offline: your changes stay on this device and sync when you are back online.");
            return;
          }
          vault.lock();
          throw error;
        }
      }),

    resumeSync: async () => {
      const { vault, username, sync } = get();
      if (!vault || !username || sync) return;
      try {
        const started = await vault.startSync({ server: server(), username, mode: "resume" });
        set({ sync: started, notice: started ? null : "Sign in again to sync: lock, then unlock." });
      } catch {
        // Still offline; the next `online` event tries again.
      }
    },

    lock: async () => {
      const { vault, sync } = get();
      await sync?.stop().catch(() => {});
      vault?.lock();
      set({ phase: "unlock", vault: null, sync: null, ui: null, notice: null, error: null });
    },

    lockedElsewhere: () => {
      void get().sync?.stop().catch(() => {});
      set({
        phase: "unlock",
        vault: null,
        sync: null,
        ui: null,
        notice: null,
        error: "The data key changed in another tab: unlock again with your passphrase.",
      });
    },

    logout: () =>
      attempt(async () => {
        const { vault, sync } = get();
        await sync?.logout();
        vault?.lock();
        localStorage.removeItem(CURRENT_KEY);
        set({ phase: "welcome", username: null, vault: null, sync: null, ui: null, notice: null });
      }),

    switchAccount: () => {
      localStorage.removeItem(CURRENT_KEY);
      set({ phase: "welcome", username: null, error: null });
    },

    clearError: () => set({ error: null }),
  };
});
