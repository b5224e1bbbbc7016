import { useEffect, useState, type FormEvent } from "react";
import { useSyncStatus } from "chatvault/react";
import { describe, useSession } from "./session";

function useOnline(): boolean {
  const [online, setOnline] = useState(navigator.onLine);
  useEffect(() => {
    const update = () => setOnline(navigator.onLine);
    window.addEventListener("online", update);
    window.addEventListener("offline", update);
    return () => {
      window.removeEventListener("online", update);
      window.removeEventListener("offline", update);
    };
  }, []);
  return online;
}

const clock = (ms: number) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** Online or not, syncing, pending changes, last synced, refused changes. */
export function StatusBar() {
  const sync = useSession((s) => s.sync);
  const status = useSyncStatus(sync);
  const online = useOnline();
  const [retrying, setRetrying] = useState(false);
  const [message, setMessage] = useState<string | null>(null);

  const offline = !online || status?.state === "offline";
  const activity = !status
    ? "Sync not started"
    : status.errorCode === "unauthorized"
      ? "Signed out on this device (passphrase changed or session ended elsewhere)"
      : status.state === "syncing"
        ? "Syncing…"
        : status.state === "error"
          ? `Sync error: ${status.error ?? status.lastError ?? "unknown"}`
          : offline
            ? "Waiting for the network"
            : status.pending > 0
              ? "Waiting to sync"
              : "Up to date";

  async function retry() {
    if (!sync) return;
    setRetrying(true);
    try {
      const n = await sync.retryAllDeadLetters();
      setMessage(`${n} refused ${n === 1 ? "change" : "changes"} queued again.`);
      await sync.syncNow().catch(() => {});
    } catch (e) {
      setMessage(describe(e));
    } finally {
      setRetrying(false);
    }
  }

  return (
    <footer className="statusbar">
      <div role="status" aria-label="Sync status" className="status-items">
        <span className={`dot ${offline ? "off" : "on"}`}>{offline ? "Offline" : "Online"}</span>
        <span>{activity}</span>
        <span>{status ? `${status.pending} pending` : ""}</span>
        <span>{status?.lastSyncedAt ? `Last synced ${clock(status.lastSyncedAt)}` : status ? "Not synced yet" : ""}</span>
        {status && status.deadLetters > 0 && (
          <span className="warn">
            {status.deadLetters} refused
          </span>
        )}
        {status?.realtime && <span className="muted">Live</span>}
      </div>
      {status && status.deadLetters > 0 && (
        <button type="button" className="small" disabled={retrying} onClick={() => void retry()}>
          Retry refused changes
        </button>
      )}
      {status?.errorCode === "unauthorized" && sync && <SignInAgain onDone={setMessage} />}
      {message && <span className="muted">{message}</span>}
    </footer>
  );
}

/** After the passphrase changed on another device: sign in with the new one. */
function SignInAgain({ onDone }: { onDone(message: string): void }) {
  const sync = useSession((s) => s.sync);
  const [passphrase, setPassphrase] = useState("");
  async function submit(event: FormEvent) {
    event.preventDefault();
    try {
      await sync?.signIn(passphrase);
      onDone("Signed in again.");
    } catch (e) {
      onDone(describe(e));
    }
  }
  return (
    <form className="inline" onSubmit={(e) => void submit(e)} aria-label="Sign in again">
      <label>
        Passphrase{" "}
        <input type="password" autoComplete="current-password" required value={passphrase} onChange={(e) => setPassphrase(e.target.value)} />
      </label>
      <button type="submit" className="small">
        Sign in
      </button>
    </form>
  );
}
