import { useEffect, useMemo, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useStore } from "zustand";
import { useConversations, useMessages } from "chatvault/react";
import type { Conversation, Role, Vault } from "chatvault";
import { describe, useSession } from "./session";
import type { UiStore } from "./ui";
import { reply, titleFrom } from "./assistant";

const NEW_TITLE = "New conversation";
const COMPOSER_ID = "composer";

const time = (ms: number) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const day = (ms: number) => new Date(ms).toLocaleDateString([], { month: "short", day: "numeric" });

const isPinned = (c: Conversation) => c.metadata?.pinned === true;

/** Small line icons (no icon font: every system draws them the same). */
const ICONS = {
  rename: "M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4",
  pin: "M9 4h6l-1 6 3 3H7l3-3-1-6zM12 13v7",
  delete: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
} as const;

function Icon({ name }: { name: keyof typeof ICONS }) {
  return (
    <svg viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round" aria-hidden="true" focusable="false">
      <path d={ICONS[name]} />
    </svg>
  );
}

/** The conversation list beside (or, on a phone, instead of) the open conversation. */
export function Chat() {
  const vault = useSession((s) => s.vault)!;
  const ui = useSession((s) => s.ui)!;
  const selected = useStore(ui, (s) => s.selected);
  // On a narrow screen one pane shows at a time.
  const [pane, setPane] = useState<"list" | "conversation">(selected ? "conversation" : "list");

  return (
    <div className="chat" data-pane={pane}>
      <Conversations vault={vault} ui={ui} onOpen={() => setPane("conversation")} />
      <ConversationView vault={vault} ui={ui} onBack={() => setPane("list")} />
    </div>
  );
}

function Conversations({ vault, ui, onOpen }: { vault: Vault; ui: UiStore; onOpen(): void }) {
  const [search, setSearch] = useState("");
  const { items, loading, error, hasMore, loadMore } = useConversations(vault, { search, pageSize: 50 });
  const selected = useStore(ui, (s) => s.selected);
  const select = useStore(ui, (s) => s.select);
  const [failure, setFailure] = useState<string | null>(null);
  // Pinned first; each group newest activity first (the order listed).
  const sorted = useMemo(() => [...items.filter(isPinned), ...items.filter((c) => !isPinned(c))], [items]);

  // A new conversation starts as an empty composer: the first message
  // creates it (titled by its first words), so no empty ones pile up.
  function startNew() {
    select(null);
    onOpen();
    requestAnimationFrame(() => document.getElementById(COMPOSER_ID)?.focus());
  }

  return (
    <section className="sidebar" aria-labelledby="conversations-heading">
      <div className="sidebar-head">
        <h2 id="conversations-heading">Conversations</h2>
        <button type="button" className="primary" onClick={startNew}>
          New conversation
        </button>
      </div>
      <label className="search">
        <span className="visually-hidden">Search conversations</span>
        <input
          type="search"
          placeholder="Search by title"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
      </label>
      {(failure || error) && (
        <p className="error" role="alert">
          {failure ?? describe(error)}
        </p>
      )}
      {loading && items.length === 0 ? (
        <p className="muted">Loading…</p>
      ) : sorted.length === 0 ? (
        <p className="muted">{search ? "No conversation matches." : "No conversations yet. Start one!"}</p>
      ) : (
        <ul className="conversation-list" aria-label="Conversations">
          {sorted.map((c) => (
            <ConversationItem
              key={c.id}
              vault={vault}
              conversation={c}
              current={c.id === selected}
              onOpen={() => {
                select(c.id);
                onOpen();
              }}
              onDeleted={() => c.id === selected && select(null)}
              onError={setFailure}
            />
          ))}
        </ul>
      )}
      {hasMore && (
        <button type="button" className="ghost" onClick={loadMore}>
          Show more
        </button>
      )}
    </section>
  );
}

function ConversationItem(props: {
  vault: Vault;
  conversation: Conversation;
  current: boolean;
  onOpen(): void;
  onDeleted(): void;
  onError(message: string | null): void;
}) {
  const { vault, conversation: c, current, onOpen, onDeleted, onError } = props;
  const [renaming, setRenaming] = useState(false);
  const [title, setTitle] = useState(c.title);
  const pinned = isPinned(c);

  async function run(work: () => Promise<unknown>) {
    try {
      onError(null);
      await work();
    } catch (e) {
      onError(describe(e));
    }
  }

  function rename(event: FormEvent) {
    event.preventDefault();
    const next = title.trim();
    setRenaming(false);
    if (next && next !== c.title) void run(() => vault.renameConversation(c.id, next));
  }

  if (renaming) {
    return (
      <li className="conversation editing">
        <form onSubmit={rename} aria-label={`Rename ${c.title}`}>
          <label>
            <span className="visually-hidden">New title</span>
            <input
              autoFocus
              value={title}
              maxLength={200}
              onChange={(e) => setTitle(e.target.value)}
              onKeyDown={(e) => e.key === "Escape" && setRenaming(false)}
            />
          </label>
          <button type="submit" className="small">
            Save
          </button>
          <button type="button" className="small ghost" onClick={() => setRenaming(false)}>
            Cancel
          </button>
        </form>
      </li>
    );
  }

  return (
    <li className={`conversation${current ? " current" : ""}`}>
      <button type="button" className="open" aria-current={current ? "true" : undefined} onClick={onOpen}>
        <span className="title">
          {pinned && (
            <span className="pinmark" title="Pinned">
              <Icon name="pin" />
              <span className="visually-hidden">Pinned: </span>
            </span>
          )}
          {c.title}
        </span>
        <span className="when">{day(c.updatedAt)}</span>
      </button>
      <span className="actions">
        <button
          type="button"
          className="icon"
          aria-label={`Rename ${c.title}`}
          title="Rename"
          onClick={() => {
            setTitle(c.title);
            setRenaming(true);
          }}
        >
          <Icon name="rename" />
        </button>
        <button
          type="button"
          className="icon"
          aria-label={`Pin ${c.title}`}
          aria-pressed={pinned}
          title={pinned ? "Unpin" : "Pin"}
          onClick={() => void run(() => vault.pinConversation(c.id, !pinned))}
        >
          <Icon name="pin" />
        </button>
        <button
          type="button"
          className="icon danger"
          aria-label={`Delete ${c.title}`}
          title="Delete"
          onClick={() => {
            if (window.confirm(`Delete “${c.title}” and its messages on every device?`)) {
              void run(async () => {
                await vault.deleteConversation(c.id);
                onDeleted();
              });
            }
          }}
        >
          <Icon name="delete" />
        </button>
      </span>
    </li>
  );
}

/** A message shown before the vault confirmed it (optimistic), or that failed. */
interface Pending {
  key: string;
  conversationId: string;
  role: Role;
  content: string;
  createdAt: number;
  /** The stored message's id once written (shown from the vault from then on). */
  id?: string;
  failed?: string;
}

function ConversationView({ vault, ui, onBack }: { vault: Vault; ui: UiStore; onBack(): void }) {
  const selected = useStore(ui, (s) => s.selected);
  const assistant = useStore(ui, (s) => s.assistant);
  const draftKey = selected ?? "";
  const draft = useStore(ui, (s) => s.drafts.get(draftKey) ?? "");
  const setDraft = useStore(ui, (s) => s.setDraft);
  const messages = useMessages(vault, selected, { pageSize: 50 });
  const [conversation, setConversation] = useState<Conversation | null>(null);
  const [pending, setPending] = useState<Pending[]>([]);
  const [failure, setFailure] = useState<string | null>(null);
  const logRef = useRef<HTMLDivElement>(null);

  // The open conversation's title (and whether it still exists).
  useEffect(() => {
    if (!selected) {
      setConversation(null);
      return;
    }
    let live = true;
    const load = () =>
      vault.conversation(selected).then(
        (c) => live && setConversation(c),
        () => live && setConversation(null),
      );
    void load();
    const stop = vault.subscribe((change) => {
      if (!change.conversationId || change.conversationId === selected || change.kind === "sync") void load();
    });
    return () => {
      live = false;
      stop();
    };
  }, [vault, selected]);

  const stored = new Set(messages.items.map((m) => m.id));
  const shown = [
    ...messages.items.map((m) => ({ key: m.id, role: m.role, content: m.content, createdAt: m.createdAt, failed: undefined as string | undefined })),
    ...pending.filter((p) => p.conversationId === selected && !(p.id && stored.has(p.id))),
  ];

  // Keep the newest message in view as messages arrive.
  const count = shown.length;
  useEffect(() => {
    const log = logRef.current;
    if (log) log.scrollTop = log.scrollHeight;
  }, [count, selected]);

  // Drop pending entries the vault has shown (they are in `messages` now).
  useEffect(() => {
    setPending((list) => {
      const next = list.filter((p) => !(p.id && stored.has(p.id)));
      return next.length === list.length ? list : next;
    });
  }, [messages.items]);

  async function write(conversationId: string, role: Role, content: string, key: string = crypto.randomUUID()) {
    setPending((list) => [
      ...list.filter((p) => p.key !== key),
      { key, conversationId, role, content, createdAt: Date.now() },
    ]);
    try {
      const message = await vault.addMessage(conversationId, { role, content });
      setPending((list) => list.map((p) => (p.key === key ? { ...p, id: message.id } : p)));
      return true;
    } catch (e) {
      setPending((list) => list.map((p) => (p.key === key ? { ...p, failed: describe(e) } : p)));
      return false;
    }
  }

  async function send(text: string) {
    let id = selected;
    if (!id || !conversation) {
      try {
        id = (await vault.createConversation(titleFrom(text))).id;
      } catch (e) {
        setFailure(describe(e));
        setDraft("", text);
        return;
      }
      ui.getState().select(id);
    }
    if ((await write(id, "user", text)) && assistant) await write(id, "assistant", reply(text));
  }

  function submit(event?: FormEvent) {
    event?.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setFailure(null);
    setDraft(draftKey, "");
    void send(text);
  }

  function onKeyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  }

  return (
    <section className="conversation-view" aria-labelledby="conversation-heading">
      <div className="conversation-head">
        <button type="button" className="ghost back" onClick={onBack}>
          ← Conversations
        </button>
        <h2 id="conversation-heading">{conversation?.title ?? NEW_TITLE}</h2>
      </div>
      <div className="log" role="log" aria-label="Messages" tabIndex={0} ref={logRef}>
        {messages.hasOlder && (
          <button type="button" className="ghost older" onClick={messages.loadOlder}>
            Load older messages
          </button>
        )}
        {(failure || messages.error) && (
          <p className="error" role="alert">
            {failure ?? describe(messages.error)}
          </p>
        )}
        {shown.length === 0 && !messages.loading && (
          <p className="muted empty">Write a message below. The local assistant answers; nothing leaves this device unencrypted.</p>
        )}
        <ol className="messages">
          {shown.map((m) => (
            <li key={m.key} className={`message ${m.role}${m.failed ? " failed" : ""}`}>
              <span className="role">{m.role === "user" ? "You" : m.role === "assistant" ? "Assistant" : m.role}</span>
              <p className="content">{m.content}</p>
              <time className="when" dateTime={new Date(m.createdAt).toISOString()}>
                {time(m.createdAt)}
              </time>
              {m.failed && (
                <span className="error">
                  Not saved: {m.failed}{" "}
                  <button
                    type="button"
                    className="small"
                    onClick={() => {
                      const p = pending.find((x) => x.key === m.key);
                      if (p) void write(p.conversationId, p.role, p.content, p.key);
                    }}
                  >
                    Retry
                  </button>
                </span>
              )}
            </li>
          ))}
        </ol>
      </div>
      <form className="composer" onSubmit={submit} aria-label="Send a message">
        <label className="grow">
          <span className="visually-hidden">Message</span>
          <textarea
            id={COMPOSER_ID}
            rows={2}
            placeholder="Write a message (Enter sends, Shift+Enter for a new line)"
            value={draft}
            onChange={(e) => setDraft(draftKey, e.target.value)}
            onKeyDown={onKeyDown}
          />
        </label>
        <button type="submit" className="primary" disabled={!draft.trim()}>
          Send
        </button>
      </form>
    </section>
  );
}
