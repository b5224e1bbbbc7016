import type { PersistStorage, StorageValue } from "zustand/middleware";
import type { StoreApi } from "zustand";

/** Anything with a chatvault key-value namespace's string API. */
export interface KvLike {
  readonly namespace?: string;
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  remove(key: string): Promise<void>;
}

/**
 * A zustand `PersistStorage` over a chatvault key-value namespace: Maps and
 * Sets round-trip, and racing reads never hand back a value older than one
 * a finished read or write already saw.
 */
export function chatvaultStorage<S>(kv: KvLike | Promise<KvLike>): PersistStorage<S>;

/** Rehydrates `store` when another tab writes its key in `namespace`. */
export function followOtherTabs(
  store: StoreApi<unknown> & { persist: { getOptions(): { name?: string }; rehydrate(): Promise<void> | void } },
  namespace: string,
): () => void;

/** JSON.stringify replacer keeping Maps and Sets. */
export function replacer(key: string, value: unknown): unknown;
/** JSON.parse reviver restoring them. */
export function reviver(key: string, value: unknown): unknown;

export type { StorageValue };
