// Builds the viewer into ONE self-contained HTML file (script, style and WebAssembly inlined:
// a page opened from file:// can load nothing beside it): ../src/dicomiso_packager/viewer_dist/VIEWER.HTM
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "dicomiso_packager", "viewer_dist");

// The emscripten glue of the codecs requires Node modules on a code path the browser never
// takes; they resolve to an empty module.
const nodeBuiltins = {
  name: "node-builtins",
  setup(b) {
    b.onResolve({ filter: /^(fs|path|crypto|url|module|worker_threads)$/ }, (args) => ({ path: args.path, namespace: "empty" }));
    b.onLoad({ filter: /.*/, namespace: "empty" }, () => ({ contents: "module.exports = {};" }));
  },
};

const result = await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["chrome100", "firefox115", "safari15"],
  minify: true,
  legalComments: "none",
  loader: { ".wasm": "binary" },
  plugins: [nodeBuiltins],
  write: false,
  logLevel: "warning",
});
// Nothing in the script may end or confuse the <script> element it is inlined in (HTML
// script data state): both sequences only occur inside string literals and comments.
const js = result.outputFiles[0].text.replace(/<\/script/gi, "<\\/script").replace(/<!--/g, "<\\!--");
const css = readFileSync(join(here, "src", "style.css"), "utf8");
const template = readFileSync(join(here, "src", "index.html"), "utf8");
const html = template.replace("/*CSS*/", () => css).replace("/*JS*/", () => js);
if ((html.match(/id="dicomiso-study"/g) || []).length !== 1) throw new Error("the study marker must occur once");
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "VIEWER.HTM.tmp"), html);
renameSync(join(out, "VIEWER.HTM.tmp"), join(out, "VIEWER.HTM"));
console.log(`viewer: ${join(out, "VIEWER.HTM")} ${html.length} bytes`);
