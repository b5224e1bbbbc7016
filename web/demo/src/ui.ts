// The UI state worth keeping across visits — the open conversation, the
// unsent drafts (a Map: the chatvault adapter keeps Maps as they are) and
// the assistant switch — persisted by zustand into the vault's sealed
// key-value namespace, so drafts are encrypted like messages.

import { createStore, type StoreApi } from "zustand";
import { persist } from "zustand/middleware";
import { chatvaultStorage } from "chatvault/zustand";
import type { Kv } from "chatvault";

export interface UiState {
  selected: string | null;
  drafts: Map<string, string>;
  /** Whether the local assistant answers each message. */
  assistant: boolean;
  select(id: string | null): void;
  setDraft(conversationId: string, text: string): void;
  setAssistant(on: boolean): void;
}

export type UiStore = StoreApi<UiState> & {
  persist: { rehydrate(): Promise<void> | void };
};

export function createUiStore(kv: Promise<Kv>): UiStore {
  return createStore<UiState>()(
    persist(
      (set) => ({
        selected: null,
        drafts: new Map(),
        assistant: true,
        select: (selected) => set({ selected }),
        setDraft: (conversationId, text) =>
          set((state) => {
            const drafts = new Map(state.drafts);
            if (text) drafts.set(conversationId, text);
            else drafts.delete(conversationId);
            return { drafts };
          }),
        setAssistant: (assistant) => set({ assistant }),
      }),
      {
        name: "ui",
        version: 1,
        storage: chatvaultStorage<Partial<UiState>>(kv),
        partialize: ({ selected, drafts, assistant }) => ({ selected, drafts, assistant }),
        skipHydration: true,
      },
    ),
  ) as UiStore;
}
