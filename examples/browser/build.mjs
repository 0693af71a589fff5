// Bundles src/main.ts and rsocket-js into dist/app.js for the browser and prints its size.
// Run through `npm run build` (which type-checks first); scripts/browser-deps.sh calls it.
import { build } from "esbuild";
import { statSync } from "node:fs";

const outfile = "dist/app.js";
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  minify: true,
  sourcemap: true,
  inject: ["src/buffer-shim.ts"],
  outfile,
  logLevel: "warning",
});
if (process.env.npm_config_loglevel !== "silent") {
  console.log(`${outfile}: ${statSync(outfile).size} bytes`);
}
