import { useEffect, useState } from "react";
import { useSession } from "./session";
import { Welcome } from "./Welcome";
import { Unlock } from "./Unlock";
import { Chat } from "./Chat";
import { Settings } from "./Settings";
import { StatusBar } from "./StatusBar";

export function App() {
  const phase = useSession((s) => s.phase);
  if (phase === "welcome") return <Welcome />;
  if (phase === "unlock") return <Unlock />;
  return <Main />;
}

type Screen = "chats" | "settings";
const SCREENS: [Screen, string][] = [
  ["chats", "Chats"],
  ["settings", "Settings"],
];

function Main() {
  const { username, busy, lock, logout, notice, resumeSync, error } = useSession();
  const [screen, setScreen] = useState<Screen>("chats");

  // A new data key from another tab locks this tab's vault (its keys are
  // stale): back to the unlock screen, saying why.
  const vault = useSession((s) => s.vault);
  const lockedElsewhere = useSession((s) => s.lockedElsewhere);
  useEffect(
    () =>
      vault?.subscribe((change) => {
        if (change.kind === "key" && change.op === "rotate" && change.source !== "local") lockedElsewhere();
      }),
    [vault, lockedElsewhere],
  );

  // Sync could not start at unlock (offline): start it when back online.
  useEffect(() => {
    window.addEventListener("online", resumeSync);
    return () => window.removeEventListener("online", resumeSync);
  }, [resumeSync]);

  return (
    <div className="app">
      <header className="topbar">
        <h1 className="brand">chatvault</h1>
        <nav aria-label="Main">
          {SCREENS.map(([id, label]) => (
            <button
              key={id}
              type="button"
              className="ghost"
              aria-current={screen === id ? "page" : undefined}
              onClick={() => setScreen(id)}
            >
              {label}
            </button>
          ))}
        </nav>
        <span className="who" title="Signed in as">
          {username}
        </span>
        <button type="button" className="ghost" onClick={() => void lock()}>
          Lock
        </button>
        <button type="button" className="ghost" disabled={busy} onClick={() => void logout()}>
          Log out
        </button>
      </header>
      {notice && <p className="notice">{notice}</p>}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <main className="content">{screen === "chats" ? <Chat /> : <Settings />}</main>
      <StatusBar />
    </div>
  );
}
