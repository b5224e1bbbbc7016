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
