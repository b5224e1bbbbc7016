// React hooks over a chatvault vault (`chatvault/react`). `react` 18+ is a
// peer dependency.

import type { ChatvaultError, Conversation, Kv, Message, Sync, SyncStatus, Vault } from "./index.js";

/** The namespace `usePersistence` uses when given no storage (`openKv("local", ...)`). */
export const DEFAULT_NAMESPACE: string;

export interface PersistenceOptions<T> {
  /** Where to keep the value (a Kv or a promise of one; plain or sealed). */
  storage?: Kv | Promise<Kv>;
  /** The shape's version; a stored value of another version goes through `migrate`. */
  version?: number;
  /** Turns a value stored at `fromVersion` into this version's shape. */
  migrate?: (old: unknown, fromVersion: number) => T | Promise<T>;
}

export interface PersistenceState {
  /** True until the stored value was read. */
  loading: boolean;
  /** The last read or write failure (writes are retried); cleared by a successful write. */
  error: ChatvaultError | null;
}

/**
 * State kept in a key-value namespace, with optimistic writes: the state
 * changes at once, writes run in the background one at a time, never
 * before the first read finished, and never lose the newest value.
 * Maps and Sets round-trip.
 */
export function usePersistence<T>(
  key: string,
  initial: T,
  options?: PersistenceOptions<T>,
): [T, (next: T | ((previous: T) => T)) => void, PersistenceState];

export interface LiveList<T> {
  items: T[];
  loading: boolean;
  error: ChatvaultError | null;
  /** Reads again (changes reload by themselves; this is for after an error). */
  reload(): void;
}

/** Conversations, most recent activity first, live (this tab, other tabs, sync). */
export function useConversations(
  vault: Vault | null,
  options?: { pageSize?: number; search?: string },
): LiveList<Conversation> & { hasMore: boolean; loadMore(): void };

/** A conversation's messages, oldest first, live; `loadOlder()` pages back. */
export function useMessages(
  vault: Vault | null,
  conversationId: string | null,
  options?: { pageSize?: number },
): LiveList<Message> & { hasOlder: boolean; loadOlder(): void };

/** The live status of a `Sync`, or `null` without one. */
export function useSyncStatus(sync: Sync | null): SyncStatus | null;
