// What the package's browser tests share: a static server for the package
// (the page, index.js and the wasm binding in pkg/) and a headless
// Chromium driven by playwright-core (Debian's build: nothing downloads a
// browser on these machines).

import { after, before } from "node:test";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = fileURLToPath(new URL("..", import.meta.url));
const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
};

/** Serves the package directory on a free loopback port. */
export async function serve() {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (path.includes("..") || path.includes("node_modules")) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(root, path));
      res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}/test/page.html`, close: () => server.close() };
}

/** How Chromium runs here: the system build, nothing reaching outside. */
export const CHROMIUM_OPTIONS = {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
};

/** A headless Chromium with a fresh profile. */
export async function launch() {
  return chromium.launch(CHROMIUM_OPTIONS);
}

/** Opens the test page in `context` and waits until the package loaded. */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(url);
  await page.waitForFunction(() => window.chatvault !== undefined);
  return page;
}

/**
 * The file's shared setup: before its tests, a server for the package and
 * a browser with one fresh context; after them, both closed. Returns the
 * object whose `server`, `browser` and `context` the tests use.
 */
export function browserSuite() {
  const suite = {};
  before(async () => {
    suite.server = await serve();
    suite.browser = await launch();
    suite.context = await suite.browser.newContext();
  });
  after(async () => {
    await suite.browser?.close();
    suite.server?.close();
  });
  return suite;
}
