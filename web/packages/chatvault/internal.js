// What every module of the package shares: the error type and the two
// ways of awaiting the binding (a value, or JSON text to parse), both
// turning the binding's {code, message} rejections into ChatvaultErrors.

/** An error from chatvault, with the stable `code` of the Rust side. */
export class ChatvaultError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = "ChatvaultError";
    this.code = code;
  }
}

/** The binding's rejection as a ChatvaultError (anything else as it was). */
export function wrapError(e) {
  if (e instanceof ChatvaultError) return e;
  if (e && typeof e === "object" && typeof e.code === "string") {
    return new ChatvaultError(e.code, e.message ?? e.code);
  }
  return e;
}

export async function call(promise) {
  try {
    return await promise;
  } catch (e) {
    throw wrapError(e);
  }
}

export async function callJson(promise) {
  const text = await call(promise);
  return text === undefined || text === null ? text : JSON.parse(text);
}


/**
 * The listeners of one kind of event. A listener that throws never keeps
 * the event from the others: its error is rethrown on its own, where the
 * page's error handling sees it.
 */
export class Listeners {
  #set = new Set();

  /** Adds `listener`; returns the function that removes it. */
  add(listener) {
    this.#set.add(listener);
    return () => this.#set.delete(listener);
  }

  /**
   * Adds `listener` and, in a microtask (unless it was removed by then),
   * calls it with `current()`: a subscription that starts with the value.
   */
  addWithCurrent(listener, current) {
    const remove = this.add(listener);
    queueMicrotask(() => this.#set.has(listener) && this.#call(listener, current()));
    return remove;
  }

  /** Calls every listener with `value`. */
  emit(value) {
    for (const listener of [...this.#set]) this.#call(listener, value);
  }

  #call(listener, value) {
    try {
      listener(value);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

let lastMs = 0;
let counter = 0;
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/**
 * A new UUIDv7 (RFC 9562) as text: 48 bits of Unix milliseconds, then a
 * 12-bit counter that keeps ids minted in one millisecond in the order
 * they were minted (as the Rust side's are), then 62 random bits. For
 * creates whose id the package chooses before the write (see shared.js).
 */
export function uuidv7() {
  let ms = Date.now();
  if (ms <= lastMs) {
    ms = lastMs;
    counter += 1;
    if (counter > 0xfff) {
      ms += 1;
      counter = 0;
    }
  } else {
    counter = 0;
  }
  lastMs = ms;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = 0x70 | (counter >> 8);
  bytes[7] = counter & 0xff;
  bytes[8] = 0x80 | (bytes[8] & 0x3f);
  let hex = "";
  for (const b of bytes) hex += HEX[b];
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The vault methods a worker or another tab serves (worker.js accepts the same list). */
export const VAULT_METHODS = Object.freeze([
  "createConversation",
  "conversation",
  "conversations",
  "renameConversation",
  "pinConversation",
  "updateConversation",
  "deleteConversation",
  "addMessage",
  "addMessages",
  "message",
  "messages",
  "editMessage",
  "deleteMessage",
  "stats",
  "retentionPolicy",
  "setRetentionPolicy",
  "planRetention",
  "runRetention",
  "changePassphrase",
  "rotateDataKey",
  "exportBlob",
  "importFrom",
]);

/**
 * JSON text that crosses to a worker or another tab as one string (copied
 * once, parsed once where it is used) instead of an object graph, which
 * postMessage walks and rebuilds on both sides: a bulk add's messages one
 * way, the added messages the other. `ids`: the records it creates.
 */
export function jsonText(text, ids = null) {
  return { chatvaultJson: text, ids };
}

/** Whether `value` is a `jsonText`. */
export function isJsonText(value) {
  return value !== null && typeof value === "object" && typeof value.chatvaultJson === "string";
}

/**
 * A call as a proxy (a worker's page, or a tab served by another) sends
 * it: `[args, arrive]`, where `arrive(answer)` is what the app gets back.
 * Creates get their ids here, so a call sent again cannot create twice
 * (see shared.js). A bulk add crosses as `jsonText` and is answered with
 * what the vault chose for each message (`addMessagesBrief`): the page
 * holds the content already, so it is not echoed back.
 */
export function crossing(method, args) {
  switch (method) {
    case "createConversation": {
      const [input, ...rest] = args;
      const value = typeof input === "string" ? { title: input } : input;
      return [[{ id: uuidv7(), ...value }, ...rest], same];
    }
    case "addMessage": {
      const [conversationId, message, ...rest] = args;
      return [[conversationId, { id: uuidv7(), ...message }, ...rest], same];
    }
    case "addMessages": {
      const [conversationId, messages, ...rest] = args;
      const named = messages.map((m) => (m.id ? m : { id: uuidv7(), ...m }));
      const ids = named.map((m) => m.id);
      const arrive = (answer) => {
        if (!isJsonText(answer)) return answer;
        return JSON.parse(answer.chatvaultJson).map((chosen, i) => ({
          id: chosen.id,
          conversationId,
          role: named[i].role,
          content: named[i].content,
          createdAt: chosen.createdAt,
          updatedAt: chosen.updatedAt,
          version: chosen.version,
          metadata: named[i].metadata ?? {},
        }));
      };
      return [[conversationId, jsonText(JSON.stringify(named), ids), ...rest], arrive];
    }
    default:
      return [args, same];
  }
}

const same = (answer) => answer;

/**
 * Vault method `method(...args)` through a proxy: `request(message,
 * onProgress)` sends it to whoever holds the vault (a worker, another
 * tab). An `onProgress` callback cannot cross: it stays here and hears the
 * figures the holder sends back.
 */
export function proxyCall(method, args, request) {
  let onProgress = null;
  const [crossed, arrive] = crossing(method, args);
  const sent = crossed.map((arg) => {
    if (arg && typeof arg === "object" && typeof arg.onProgress === "function") {
      onProgress = arg.onProgress;
      const { onProgress: _, ...rest } = arg;
      return { ...rest, progress: true };
    }
    return arg;
  });
  return request({ op: "call", method, args: sent }, onProgress).then(arrive);
}

/** A sealed key-value namespace through a proxy (see `proxyCall`); resolves once it exists. */
export async function proxyKv(area, namespace, request) {
  const call = (method, args) => request({ op: "kv", area, namespace, method, args });
  await call("keys", []);
  return {
    namespace,
    get: (key) => call("get", [key]),
    set: (key, value) => call("set", [key, value]),
    remove: (key) => call("remove", [key]),
    keys: () => call("keys", []),
    clear: () => call("clear", []),
    usage: () => call("usage", []),
  };
}
