// The React hooks in a real page (bundled by esbuild in react.test.mjs):
// components that record what the hooks return in `window.seen`, and
// functions the test calls to mount them. The package modules stay
// external (loaded from the package root), as in an app.

import { StrictMode, useEffect } from "react";
import { createRoot } from "react-dom/client";
import * as chatvault from "../index.js";
import { usePersistence, useConversations, useMessages, useSyncStatus } from "../react.js";

window.chatvault = chatvault;
window.seen = {};
const roots = {};

function mount(name, element) {
  const container = document.createElement("div");
  document.body.append(container);
  roots[name] = createRoot(container);
  roots[name].render(<StrictMode>{element}</StrictMode>);
}

window.unmount = (name) => roots[name]?.unmount();

function Persisted({ name, storageKey, initial, options }) {
  const [value, setValue, status] = usePersistence(storageKey, initial, options);
  window.seen[name] = { value, ...status, setValue, renders: (window.seen[name]?.renders ?? 0) + 1 };
  return <output>{JSON.stringify(value, (_k, v) => (v instanceof Map ? [...v] : v))}</output>;
}

window.mountPersisted = (name, storageKey, initial, options = {}) =>
  mount(name, <Persisted name={name} storageKey={storageKey} initial={initial} options={options} />);

function Lists({ vault, conversationId, search, pageSize }) {
  const conversations = useConversations(vault, { search, pageSize });
  const messages = useMessages(vault, conversationId, { pageSize });
  useEffect(() => {
    window.seen.lists = { conversations, messages };
  });
  return null;
}

window.mountLists = (props) => mount("lists", <Lists {...props} />);

function Status({ sync }) {
  window.seen.status = useSyncStatus(sync);
  return null;
}

window.mountStatus = (sync) => mount("status", <Status sync={sync} />);
window.ready = true;
