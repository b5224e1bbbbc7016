// Serves the package's example page: `npm run example` (after
// `cargo xtask package`), then open the URL it prints.

import { serve } from "../test/harness.mjs";

const server = await serve();
console.log(server.url.replace("/test/page.html", "/example/index.html"));
