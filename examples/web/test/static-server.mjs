// A tiny static file server for the page (index.html, style.css, dist/): node's http module
// and nothing else. `node test/static-server.mjs [port]` serves it by hand (default 5173).

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
// Only these are served: not node_modules, src or the test directory.
const servable = (path) => path === "index.html" || path === "style.css" || path.startsWith(`dist${sep}`);

/** Serves the page on 127.0.0.1:`port` (0 picks one); resolves to the listening server. */
export function serveStatic(port = 0, root = pageRoot) {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://page").pathname;
    const relative = normalize(decodeURIComponent(path === "/" ? "/index.html" : path)).replace(/^[/\\]+/, "");
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
  const server = await serveStatic(Number(process.argv[2] ?? 5173));
  const { port } = server.address();
  console.log(`serving the page on http://127.0.0.1:${port}/ (add ?authd=http://127.0.0.1:8000 to pick authd)`);
}
