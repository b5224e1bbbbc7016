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

