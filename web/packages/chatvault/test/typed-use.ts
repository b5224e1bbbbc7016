// Type-checked (never run): a typed use of the package's API, so the
// `.d.ts` people read is proven to describe a coherent API.

import {
  ChatvaultError,
  joinVault,
  openKv,
  openVault,
  opfsAvailable,
  persistStorage,
  type Conversation,
  type Message,
  type Page,
  type RetentionReport,
  type SyncReport,
  type SyncStatus,
} from "../index.js";

export async function typedUse(): Promise<void> {
  const vault = await openVault("app", { passphrase: "pass", durability: "strict" });
  const conv: Conversation = await vault.createConversation("Trip ideas");
  await vault.renameConversation(conv.id, "Trips");
  await vault.pinConversation(conv.id);
  const message: Message = await vault.addMessage(conv.id, { role: "user", content: "hi" });
  await vault.editMessage(message.id, "hello");
  let before: string | undefined;
  do {
    const page: Page<Message> = await vault.messages(conv.id, { limit: 50, before });
    page.items.forEach((m) => m.createdAt.toFixed());
    before = page.nextCursor ?? undefined;
  } while (before);
  const list = await vault.conversations({ limit: 20, activeFrom: Date.now() - 86_400_000 });
  list.items.map((c) => c.title.toUpperCase());
  const plan: RetentionReport = await vault.planRetention({ maxAgeDays: 30 });
  plan.delete.map((d) => d.reason === "age");
  const stats = await vault.stats();
  const used: number | null = stats.storage.usage;
  void used;
  await persistStorage();
  const kv = await openKv("session", "ui");
  const value: string | null = await kv.get("k");
  void value;
  try {
    await vault.deleteConversation(conv.id);
  } catch (e) {
    if (e instanceof ChatvaultError && e.code === "not_found") return;
    throw e;
  }
  vault.lock();
}

export async function typedBackend(): Promise<void> {
  // SQLite on OPFS where the browser has it, IndexedDB otherwise.
  const backend = opfsAvailable() ? "opfs-sqlite" : "indexeddb";
  const vault = await openVault("app", { passphrase: "pass", worker: true, backend });
  vault.lock();
}

export async function typedSync(): Promise<void> {
  const vault = await openVault("app", { passphrase: "pass", worker: true });
  const sync = await vault.startSync({ server: location.origin, username: "alice", passphrase: "pass" });
  if (!sync) return;
  const stop = sync.subscribe((status: SyncStatus) => {
    if (status.role === "leader" && status.state === "offline") void status.pending.toFixed();
  });
  const report: SyncReport = await sync.syncNow();
  void report.pulled;
  for (const letter of await sync.deadLetters()) {
    if (letter.nextRetryAt === null) await sync.retryDeadLetter(letter.opId);
  }
  const others = (await sync.sessions()).filter((s) => !s.current).length;
  if (others > 0) await sync.revokeOtherSessions();
  vault.subscribe((change) => change.source === "sync" && change.op === "pull");
  stop();
  await sync.logout();
  const joined = await joinVault("phone", { server: "https://sync.example", username: "alice", passphrase: "pass" });
  await joined.sync.stop();
  joined.vault.lock();
}

import { createStore } from "zustand/vanilla";
import { persist } from "zustand/middleware";
import { chatvaultStorage, followOtherTabs } from "../zustand.js";

interface Settings {
  theme: "light" | "dark";
  drafts: Map<string, string>;
}

export function typedZustand(): () => void {
  const store = createStore<Settings>()(
    persist((): Settings => ({ theme: "light", drafts: new Map() }), {
      name: "settings",
      storage: chatvaultStorage<Settings>(openKv("local", "my-app")),
      version: 1,
    }),
  );
  return followOtherTabs(store, "my-app");
}

import { usePersistence, useConversations, useMessages, useSyncStatus } from "../react.js";
import type { Vault } from "../index.js";

export function typedHooks(vault: Vault | null, conversationId: string | null): string {
  const [drafts, setDrafts, { loading, error }] = usePersistence("drafts", new Map<string, string>(), {
    version: 2,
    migrate: (old, from) => (from === 1 ? new Map(Object.entries(old as Record<string, string>)) : new Map()),
  });
  setDrafts((previous) => new Map(previous).set("c1", "hi"));
  const conversations = useConversations(vault, { search: "trip" });
  const messages = useMessages(vault, conversationId, { pageSize: 30 });
  if (messages.hasOlder) messages.loadOlder();
  const status = useSyncStatus(vault?.sync ?? null);
  return `${drafts.size} ${loading} ${error?.code} ${conversations.items.length} ${status?.pending ?? 0}`;
}
