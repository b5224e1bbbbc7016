import { useState, type FormEvent } from "react";
import { useSession } from "./session";

/** A later visit: the vault is on this device, locked. */
export function Unlock() {
  const { username, unlock, switchAccount, busy, error } = useSession();
  const [passphrase, setPassphrase] = useState("");

  function submit(event: FormEvent) {
    event.preventDefault();
    void unlock(passphrase);
  }

  return (
    <main className="gate">
      <h1 className="brand big">chatvault</h1>
      <form onSubmit={submit} className="card" aria-label="Unlock">
        <h2>Welcome back, {username}</h2>
        <p>Your vault on this device is locked.</p>
        <label>
          Passphrase
          <input
            type="password"
            name="passphrase"
            autoComplete="current-password"
            required
            autoFocus
            value={passphrase}
            onChange={(e) => setPassphrase(e.target.value)}
          />
        </label>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Unlocking…" : "Unlock"}
        </button>
        <button type="button" className="link" onClick={switchAccount}>
          Use another account
        </button>
      </form>
    </main>
  );
}
