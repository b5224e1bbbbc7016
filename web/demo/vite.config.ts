import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The app is served by the sync server at `/` (same origin as the API), so
// it is built with relative asset paths and no dev proxy is needed for the
// production build. `npm run dev` proxies the API to a local server.
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
    proxy: {
      "/v1": { target: "http://127.0.0.1:8787", ws: true },
      "/healthz": "http://127.0.0.1:8787",
    },
  },
});
