import { useId, useState, type FormEvent } from "react";
import { useSession } from "./session";
import { strength } from "./strength";

/** First visit: create an account, or sign in on a new device. */
export function Welcome() {
  const { register, signIn, busy, error, clearError } = useSession();
  const [mode, setMode] = useState<"create" | "signin">("create");
  const [username, setUsername] = useState("");
  const [passphrase, setPassphrase] = useState("");
  const [confirm, setConfirm] = useState("");
  const [mismatch, setMismatch] = useState(false);
  const hintId = useId();
  const hint = strength(passphrase);

  function choose(next: "create" | "signin") {
    setMode(next);
    setMismatch(false);
    clearError();
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    if (mode === "create") {
      if (passphrase !== confirm) {
        setMismatch(true);
        return;
      }
      setMismatch(false);
      void register(username.trim(), passphrase);
    } else {
      void signIn(username.trim(), passphrase);
    }
  }

  return (
    <main className="gate">
      <h1 className="brand big">chatvault</h1>
      <p className="lede">
        Your conversations, on this device and your others — encrypted with your passphrase before they leave the
        browser. The server only ever sees ciphertext.
      </p>
      <div className="tabs" role="group" aria-label="Account">
        <button type="button" aria-pressed={mode === "create"} onClick={() => choose("create")}>
          Create account
        </button>
        <button type="button" aria-pressed={mode === "signin"} onClick={() => choose("signin")}>
          Sign in on this device
        </button>
      </div>
      <form onSubmit={submit} className="card" aria-label={mode === "create" ? "Create account" : "Sign in"}>
        <h2>{mode === "create" ? "Create your account" : "Sign in on this device"}</h2>
        <label>
          Username
          <input
            name="username"
            autoComplete="username"
            required
            pattern="[A-Za-z0-9._\-]{3,64}"
            title="3 to 64 letters, digits, dots, dashes or underscores"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
        </label>
        <label>
          Passphrase
          <input
            type="password"
            name="passphrase"
            autoComplete={mode === "create" ? "new-password" : "current-password"}
            required
            minLength={mode === "create" ? 8 : 1}
            aria-describedby={mode === "create" ? hintId : undefined}
            value={passphrase}
            onChange={(e) => setPassphrase(e.target.value)}
          />
        </label>
        {mode === "create" && (
          <>
            <p id={hintId} className={`strength s${hint.score}`} aria-live="polite">
              <meter min={0} max={3} value={hint.score} aria-hidden="true" /> Strength: {hint.label}. {hint.hint}
            </p>
            <label>
              Repeat passphrase
              <input
                type="password"
                name="confirm"
                autoComplete="new-password"
                required
                value={confirm}
                aria-invalid={mismatch}
                onChange={(e) => setConfirm(e.target.value)}
              />
            </label>
            {mismatch && (
              <p className="error" role="alert">
                The passphrases do not match.
              </p>
            )}
            <p className="fine">
              There is no reset: without the passphrase nobody, not even the server, can read your data.
            </p>
          </>
        )}
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Working…" : mode === "create" ? "Create account" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
