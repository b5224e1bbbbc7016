import { useEffect, useState, type FormEvent, type ReactNode } from "react";
import { useStore } from "zustand";
import { persistStorage, type AccountSession, type DeadLetter, type RetentionPolicy, type RetentionReport, type VaultStats } from "chatvault";
import { describe, useSession } from "./session";

const MB = 1_000_000;

function bytes(n: number | null | undefined): string {
  if (n == null) return "unknown";
  if (n < 1000) return `${n} B`;
  if (n < MB) return `${(n / 1000).toFixed(1)} kB`;
  if (n < 1000 * MB) return `${(n / MB).toFixed(1)} MB`;
  return `${(n / (1000 * MB)).toFixed(2)} GB`;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function Section({ id, title, children }: { id: string; title: string; children: ReactNode }) {
  return (
    <section className="card setting" aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** Shows the outcome of an action: a result, or an error as an alert. */
function Outcome({ result, error }: { result: ReactNode; error: string | null }) {
  return (
    <>
      {result && (
        <div className="result" role="status">
          {result}
        </div>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </>
  );
}

/** Runs an action, keeping its result or error for display. */
function useAction<T>() {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  async function run(work: () => Promise<T>) {
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      setResult(await work());
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  }
  return { busy, result, error, run, setResult };
}

export function Settings() {
  return (
    <div className="settings">
      <Retention />
      <Storage />
      <ExportImport />
      <Passphrase />
      <Sessions />
      <Refused />
      <Assistant />
    </div>
  );
}

function Retention() {
  const vault = useSession((s) => s.vault)!;
  const [maxAgeDays, setMaxAgeDays] = useState("30");
  const [maxConversations, setMaxConversations] = useState("");
  const [maxMegabytes, setMaxMegabytes] = useState("");
  const [titles, setTitles] = useState<Map<string, string>>(new Map());
  const preview = useAction<RetentionReport>();
  const apply = useAction<RetentionReport>();

  useEffect(() => {
    void vault.retentionPolicy().then((policy) => {
      if (!policy) return;
      setMaxAgeDays(policy.maxAgeDays?.toString() ?? "");
      setMaxConversations(policy.maxConversations?.toString() ?? "");
      setMaxMegabytes(policy.maxBytes ? (policy.maxBytes / MB).toString() : "");
    });
  }, [vault]);

  function policy(): RetentionPolicy {
    const p: RetentionPolicy = {};
    if (maxAgeDays.trim()) p.maxAgeDays = Number(maxAgeDays);
    if (maxConversations.trim()) p.maxConversations = Number(maxConversations);
    if (maxMegabytes.trim()) p.maxBytes = Math.round(Number(maxMegabytes) * MB);
    return p;
  }

  async function dryRun() {
    await preview.run(async () => {
      const report = await vault.planRetention(policy());
      const names = new Map<string, string>();
      for (const entry of [...report.delete, ...report.kept]) {
        names.set(entry.id, await vault.conversation(entry.id).then((c) => c.title, () => entry.id));
      }
      setTitles(names);
      return report;
    });
    apply.setResult(null);
  }

  async function run(event: FormEvent) {
    event.preventDefault();
    const p = policy();
    await apply.run(async () => {
      await vault.setRetentionPolicy(Object.keys(p).length ? p : null);
      return vault.runRetention(p);
    });
    preview.setResult(null);
  }

  const plan = preview.result;
  return (
    <Section id="retention-heading" title="Retention">
      <p className="muted">Delete old conversations from this vault and, through sync, from your other devices.</p>
      <form onSubmit={(e) => void run(e)} className="grid" aria-label="Retention policy">
        <label>
          Maximum age (days)
          <input type="number" min={1} inputMode="numeric" value={maxAgeDays} onChange={(e) => setMaxAgeDays(e.target.value)} />
        </label>
        <label>
          Maximum conversations
          <input type="number" min={1} inputMode="numeric" value={maxConversations} onChange={(e) => setMaxConversations(e.target.value)} />
        </label>
        <label>
          Maximum size (MB)
          <input type="number" min={0.1} step={0.1} inputMode="decimal" value={maxMegabytes} onChange={(e) => setMaxMegabytes(e.target.value)} />
        </label>
        <div className="row">
          <button type="button" disabled={preview.busy} onClick={() => void dryRun()}>
            Preview
          </button>
          <button type="submit" className="primary" disabled={apply.busy || !preview.result}>
            Apply
          </button>
        </div>
      </form>
      {!preview.result && !apply.result && <p className="fine">Preview first: it deletes nothing.</p>}
      <Outcome
        error={preview.error ?? apply.error}
        result={
          plan ? (
            <>
              <p>
                Would delete {plural(plan.delete.length, "conversation")} ({bytes(plan.bytesFreed)}); {plural(plan.remainingConversations, "conversation")} would remain.
              </p>
              {plan.delete.length > 0 && (
                <ul aria-label="Would delete">
                  {plan.delete.map((d) => (
                    <li key={d.id}>
                      {titles.get(d.id) ?? d.id} — last active {new Date(d.updatedAt).toLocaleDateString()} ({d.reason})
                    </li>
                  ))}
                </ul>
              )}
              {plan.kept.length > 0 && (
                <p className="muted">
                  {plural(plan.kept.length, "conversation")} kept for now: not synced yet ({plan.kept.map((k) => titles.get(k.id) ?? k.id).join(", ")}).
                </p>
              )}
            </>
          ) : apply.result ? (
            <p>
              Deleted {plural(apply.result.delete.length, "conversation")}, freed {bytes(apply.result.bytesFreed)}. Policy saved.
            </p>
          ) : null
        }
      />
    </Section>
  );
}

function Storage() {
  const vault = useSession((s) => s.vault)!;
  const [stats, setStats] = useState<VaultStats | null>(null);
  const keep = useAction<boolean>();

  useEffect(() => {
    let live = true;
    const load = () => void vault.stats().then((s) => live && setStats(s), () => {});
    load();
    const stop = vault.subscribe(load);
    return () => {
      live = false;
      stop();
    };
  }, [vault]);

  const usage = stats?.storage.usage ?? null;
  const quota = stats?.storage.quota ?? null;
  return (
    <Section id="storage-heading" title="Storage">
      {stats ? (
        <dl className="facts">
          <dt>Conversations</dt>
          <dd>{stats.conversations}</dd>
          <dt>Messages</dt>
          <dd>{stats.messages}</dd>
          <dt>Vault content</dt>
          <dd>{bytes(stats.bytes)} (encrypted)</dd>
          <dt>Site storage used</dt>
          <dd>
            {bytes(usage)} of {bytes(quota)}
            {usage != null && quota ? (
              <progress max={quota} value={usage} aria-label="Storage used" />
            ) : null}
          </dd>
          <dt>Kept under storage pressure</dt>
          <dd>{stats.storage.persisted || keep.result ? "Yes" : "No: the browser may evict this site's data"}</dd>
        </dl>
      ) : (
        <p className="muted">Loading…</p>
      )}
      <button type="button" disabled={keep.busy || stats?.storage.persisted} onClick={() => void keep.run(persistStorage)}>
        Keep my data
      </button>
      <Outcome
        error={keep.error}
        result={keep.result === null ? null : keep.result ? "The browser will keep this site's data." : "The browser declined (it decides by how you use the site); try again later or bookmark it."}
      />
    </Section>
  );
}

function download(blob: Blob, name: string) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function ExportImport() {
  const vault = useSession((s) => s.vault)!;
  const [encrypt, setEncrypt] = useState(true);
  const [exportPassphrase, setExportPassphrase] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [importPassphrase, setImportPassphrase] = useState("");
  const [progress, setProgress] = useState<string | null>(null);
  const exporting = useAction<string>();
  const importing = useAction<string>();

  async function doExport(event: FormEvent) {
    event.preventDefault();
    await exporting.run(async () => {
      const { blob, report } = await vault.exportBlob({
        passphrase: encrypt ? exportPassphrase : undefined,
        onProgress: (p) => setProgress(`Exporting: ${p.done}${p.total ? ` of ${p.total}` : ""}`),
      });
      const stamp = new Date().toISOString().slice(0, 10);
      download(blob, `chatvault-${stamp}${report.encrypted ? ".cvx" : ".json"}`);
      setProgress(null);
      const c = report.counts;
      return `Exported ${plural(c.conversations, "conversation")} and ${plural(c.messages, "message")} (${bytes(report.bytes)}${report.encrypted ? ", encrypted" : ""}).`;
    });
    setProgress(null);
  }

  async function doImport(event: FormEvent) {
    event.preventDefault();
    if (!file) return;
    await importing.run(async () => {
      const report = await vault
        .importFrom(file, {
          passphrase: importPassphrase || undefined,
          onProgress: (p) => setProgress(`${p.phase === "validating" ? "Checking" : "Importing"}: ${p.done}${p.total ? ` of ${p.total}` : ""}`),
        })
        .catch((e: unknown) => {
          throw new Error(`Nothing was imported. ${describe(e)}`);
        });
      const r = report.records;
      return `Imported ${report.imported} of ${r.conversations + r.messages + r.tombstones} records (${plural(r.conversations, "conversation")}, ${plural(r.messages, "message")}); ${report.skipped} already here, ${report.rejected} refused.`;
    });
    setProgress(null);
  }

  return (
    <Section id="export-heading" title="Export and import">
      <form onSubmit={(e) => void doExport(e)} aria-label="Export">
        <label className="check">
          <input type="checkbox" checked={encrypt} onChange={(e) => setEncrypt(e.target.checked)} /> Encrypt the export with a passphrase
        </label>
        {encrypt && (
          <label>
            Export passphrase
            <input type="password" autoComplete="new-password" required minLength={8} value={exportPassphrase} onChange={(e) => setExportPassphrase(e.target.value)} />
          </label>
        )}
        <button type="submit" disabled={exporting.busy}>
          Export
        </button>
      </form>
      <Outcome result={exporting.result} error={exporting.error} />
      <form onSubmit={(e) => void doImport(e)} aria-label="Import">
        <label>
          Export file
          <input type="file" accept=".json,.cvx,application/json" onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
        </label>
        <label>
          File passphrase (if encrypted)
          <input type="password" autoComplete="off" value={importPassphrase} onChange={(e) => setImportPassphrase(e.target.value)} />
        </label>
        <button type="submit" disabled={importing.busy || !file}>
          Import
        </button>
      </form>
      {progress && <p className="muted" aria-live="polite">{progress}</p>}
      <Outcome result={importing.result} error={importing.error} />
    </Section>
  );
}

function Passphrase() {
  const vault = useSession((s) => s.vault)!;
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [repeat, setRepeat] = useState("");
  const [rotate, setRotate] = useState(false);
  const change = useAction<string>();

  async function submit(event: FormEvent) {
    event.preventDefault();
    await change.run(async () => {
      if (next !== repeat) throw new Error("The new passphrases do not match.");
      await vault.changePassphrase(current, next);
      if (rotate) await vault.rotateDataKey(next);
      setCurrent("");
      setNext("");
      setRepeat("");
      return rotate
        ? "Passphrase changed and the data key rotated. Other devices ask for the new passphrase."
        : "Passphrase changed. Other devices ask for the new passphrase.";
    });
  }

  return (
    <Section id="passphrase-heading" title="Passphrase">
      <form onSubmit={(e) => void submit(e)} className="grid" aria-label="Change passphrase">
        <label>
          Current passphrase
          <input type="password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.target.value)} />
        </label>
        <label>
          New passphrase
          <input type="password" autoComplete="new-password" required minLength={8} value={next} onChange={(e) => setNext(e.target.value)} />
        </label>
        <label>
          Repeat new passphrase
          <input type="password" autoComplete="new-password" required value={repeat} onChange={(e) => setRepeat(e.target.value)} />
        </label>
        <label className="check">
          <input type="checkbox" checked={rotate} onChange={(e) => setRotate(e.target.checked)} /> Also rotate the data key (re-encrypts everything)
        </label>
        <button type="submit" disabled={change.busy}>
          Change passphrase
        </button>
      </form>
      <Outcome result={change.result} error={change.error} />
    </Section>
  );
}

function Sessions() {
  const sync = useSession((s) => s.sync);
  const [sessions, setSessions] = useState<AccountSession[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const revoke = useAction<string>();

  async function load() {
    if (!sync) return;
    try {
      setSessions(await sync.sessions());
      setLoadError(null);
    } catch (e) {
      setLoadError(describe(e));
    }
  }
  useEffect(() => {
    void load();
  }, [sync]);

  return (
    <Section id="sessions-heading" title="Active sessions">
      {!sync ? (
        <p className="muted">Sync is not running on this device.</p>
      ) : sessions ? (
        <ul className="sessions" aria-label="Sessions">
          {sessions.map((s) => (
            <li key={s.id}>
              {s.client || "browser"} — signed in {new Date(s.createdAt).toLocaleString()}, last used{" "}
              {new Date(s.lastUsedAt).toLocaleString()}
              {s.current && <strong> (this device)</strong>}
            </li>
          ))}
        </ul>
      ) : (
        <p className="muted">{loadError ?? "Loading…"}</p>
      )}
      <button
        type="button"
        disabled={!sync || revoke.busy}
        onClick={() =>
          void revoke.run(async () => {
            const n = await sync!.revokeOtherSessions();
            await load();
            return `Signed out ${plural(n, "other session")}.`;
          })
        }
      >
        Sign out everywhere else
      </button>
      <Outcome result={revoke.result} error={revoke.error} />
    </Section>
  );
}

function Refused() {
  const sync = useSession((s) => s.sync);
  const [letters, setLetters] = useState<DeadLetter[]>([]);
  const act = useAction<string>();

  useEffect(() => {
    if (!sync) return;
    let live = true;
    const load = () => void sync.deadLetters().then((l) => live && setLetters(l), () => {});
    load();
    const stop = sync.subscribe(load);
    return () => {
      live = false;
      stop();
    };
  }, [sync]);

  if (!sync || letters.length === 0) return null;
  return (
    <Section id="refused-heading" title="Changes the server refused">
      <p className="muted">They stay on this device until retried or discarded.</p>
      <ul aria-label="Refused changes">
        {letters.map((l) => (
          <li key={l.opId}>
            {l.kind} {l.delete ? "deletion" : "change"}: {l.message} ({l.reason}, {plural(l.attempts, "attempt")}){" "}
            <button type="button" className="small" onClick={() => void act.run(async () => ((await sync.retryDeadLetter(l.opId)) ? "Queued again." : "Already gone."))}>
              Retry
            </button>{" "}
            <button type="button" className="small ghost" onClick={() => void act.run(async () => ((await sync.discardDeadLetter(l.opId)) ? "Discarded: it stays here, unsynced." : "Already gone."))}>
              Discard
            </button>
          </li>
        ))}
      </ul>
      <Outcome result={act.result} error={act.error} />
    </Section>
  );
}

function Assistant() {
  const ui = useSession((s) => s.ui)!;
  const on = useStore(ui, (s) => s.assistant);
  const set = useStore(ui, (s) => s.setAssistant);
  return (
    <Section id="assistant-heading" title="Assistant">
      <label className="check">
        <input type="checkbox" checked={on} onChange={(e) => set(e.target.checked)} /> The local assistant answers each message
      </label>
      <p className="fine">A deterministic echo with a word count, computed in this browser: no model, no network.</p>
    </Section>
  );
}
