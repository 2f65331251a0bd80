// Build the node's web app: bundle each page's script (offchain/api/web/<page>.js, with viem and
// Chart.js from node_modules) into offchain/api/static/dist/<page>.js with esbuild, and copy
// Swagger UI's files (swagger-ui-dist) to offchain/api/static/dist/swagger/ so /docs works
// offline. Run by scripts/setup.sh (and by the browser tests before they start); about a second.
// Usage: node scripts/build_web.mjs [--watch]
import { build, context } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const source = join(root, "offchain", "api", "web");
const out = join(root, "offchain", "api", "static", "dist");

const pages = readdirSync(source).filter((name) => name.endsWith(".js")).sort();

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "swagger"), { recursive: true });
const swagger = join(root, "node_modules", "swagger-ui-dist");
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"]) {
  copyFileSync(join(swagger, name), join(out, "swagger", name));
}

const options = {
  entryPoints: pages.map((name) => join(source, name)),
  outdir: out,
  bundle: true,
  format: "esm",
  splitting: true, // viem and the shared lib are one chunk, not copied into every page
  chunkNames: "chunks/[name]-[hash]",
  minify: true,
  sourcemap: true,
  target: ["chrome110", "firefox110", "safari16"],
  legalComments: "linked",
  logLevel: "warning",
};

if (pages.length === 0) {
  console.log(`build_web: no page scripts in ${source}; only Swagger UI copied`);
} else if (process.argv.includes("--watch")) {
  const ctx = await context(options);
  await ctx.watch();
  console.log(`build_web: watching ${source}`);
} else {
  const started = performance.now();
  await build(options);
  const ms = Math.round(performance.now() - started);
  console.log(`build_web: ${pages.length} page scripts → ${out} in ${ms} ms`);
}
