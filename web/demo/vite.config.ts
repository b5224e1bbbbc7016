import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The app is served by the sync server at `/` (same origin as the API), so
// it is built with relative asset paths. `npm run dev` serves it with hot
// reload and proxies the API (and its WebSocket) to a running server.
// `npm run dev`: the sync server the dev server proxies the API to.
const server = process.env.CHATVAULT_SERVER ?? "http://127.0.0.1:8787";

export default defineConfig({
  plugins: [react()],
  base: "./",
  resolve: {
    // `chatvault` is linked from ../packages/chatvault, which has its own
    // dev copies of React and zustand: one copy each, or hooks break.
    dedupe: ["react", "react-dom", "zustand"],
  },
  worker: { format: "es" },
  build: { target: "es2022", outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 2048 },
  server: {
    // The linked package (its wasm and worker) lives beside the app.
    fs: { allow: [".", "../packages/chatvault"] },
    proxy: {
      "/v1": { target: server, ws: true },
      "/healthz": server,
    },
  },
});
