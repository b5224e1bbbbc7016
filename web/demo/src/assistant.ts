// The demo's assistant: deterministic and local (no model, no network), so
// the app shows a conversation's two roles without any service.

export function reply(text: string): string {
  const words = text.trim().split(/\s+/).filter(Boolean).length;
  const quoted = text.length > 120 ? `${text.slice(0, 117)}…` : text;
  return `You said: “${quoted}” — ${words} ${words === 1 ? "word" : "words"}, ${text.length} ${text.length === 1 ? "character" : "characters"}.`;
}

/** A title from a first message: its first words. */
export function titleFrom(text: string): string {
  const words = text.trim().split(/\s+/).slice(0, 6).join(" ");
  return words.length > 48 ? `${words.slice(0, 47)}…` : words || "New conversation";
}
