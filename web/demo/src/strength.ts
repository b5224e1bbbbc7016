// A passphrase strength hint: rough guessing entropy from length and
// character classes, with penalties for repeats and common words. It is a
// hint for people, not a policy: the vault's Argon2id does the real work.

export type Strength = { score: 0 | 1 | 2 | 3; label: string; hint: string };

const COMMON = ["password", "passphrase", "qwerty", "letmein", "123456", "chatvault", "welcome", "admin"];

export function strength(passphrase: string): Strength {
  if (!passphrase) return { score: 0, label: "empty", hint: "Use at least 12 characters; a few random words work well." };
  let pool = 0;
  if (/[a-z]/.test(passphrase)) pool += 26;
  if (/[A-Z]/.test(passphrase)) pool += 26;
  if (/[0-9]/.test(passphrase)) pool += 10;
  if (/[^A-Za-z0-9]/.test(passphrase)) pool += 33;
  const distinct = new Set(passphrase).size;
  let bits = Math.log2(Math.max(pool, 2)) * Math.min(passphrase.length, distinct * 2);
  const lower = passphrase.toLowerCase();
  if (COMMON.some((word) => lower.includes(word))) bits -= 20;
  if (passphrase.length < 8) return { score: 0, label: "too short", hint: "At least 8 characters; 12 or more is better." };
  if (bits < 40) return { score: 1, label: "weak", hint: "Add more words or characters." };
  if (bits < 64) return { score: 2, label: "fair", hint: "Longer is stronger: add another word." };
  return { score: 3, label: "strong", hint: "Good. Keep it safe: it cannot be recovered." };
}
