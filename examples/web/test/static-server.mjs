// A tiny static file server for the page (index.html, style.css, dist/): node's http module
// and nothing else. `node test/static-server.mjs [port] [authd URL]` serves it by hand
// (default 5173; the authd URL goes into config.json, which the page reads when its own URL
// has no `?authd=`, as when it is opened from a link in a mail).

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

export const pageRoot = fileURLToPath(new URL("..", import.meta.url));

const types = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
};
// The page's views, each at a path of its own: the links in authd's mails are
// `<PUBLIC_URL>/verify-email?token=…`, `/reset-password?token=…`, `/confirm-email-change?token=…`
// and `/forgot-password`. Each is index.html, which shows the view its path names.
export const views = ["forgot-password", "reset-password", "verify-email", "confirm-email-change"];
// Only these are served: not node_modules, src or the test directory.
const servable = (path) => path === "index.html" || path === "style.css" || path.startsWith(`dist${sep}`);

/**
 * Serves the page on 127.0.0.1:`port` (0 picks one); resolves to the listening server.
 * `config.authd`, when set (also after the start), is served as config.json.
 */
export function serveStatic(port = 0, root = pageRoot, config = {}) {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://page").pathname;
    let relative = normalize(decodeURIComponent(path === "/" ? "/index.html" : path)).replace(/^[/\\]+/, "");
    if (views.includes(relative)) relative = "index.html";
    if (request.method === "GET" && relative === "config.json" && config.authd) {
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ authd: config.authd }));
      return;
    }
    if (request.method !== "GET" || !servable(relative)) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    try {
      const body = await readFile(join(root, relative));
      response.writeHead(200, { "content-type": types[extname(relative)] ?? "application/octet-stream" }).end(body);
    } catch {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found (run `npm run build`?)\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const authd = process.argv[3] ?? "http://127.0.0.1:8000";
  const server = await serveStatic(Number(process.argv[2] ?? 5173), pageRoot, { authd });
  const { port } = server.address();
  console.log(`serving the page on http://127.0.0.1:${port}/ for authd at ${authd}`);
  console.log(`(set PUBLIC_URL=http://127.0.0.1:${port} for authd's mail links to open it)`);
}
