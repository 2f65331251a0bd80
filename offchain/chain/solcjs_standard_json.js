#!/usr/bin/env node
/*
 * A `solc` stand-in over solcjs (npm `solc`, WebAssembly) for tools that shell out to a native
 * compiler, such as py-solc-x's `compile_standard`. It answers two command lines:
 *
 *   solcjs_standard_json.js --version
 *       prints "solc, the solidity compiler commandline interface\nVersion: <version>"
 *   solcjs_standard_json.js --standard-json [--base-path DIR] [--allow-paths A,B] [--include-path DIR]
 *       reads the Standard JSON input on stdin and prints only the compiler's JSON output on stdout
 *       (unlike `solcjs --standard-json`, no SMT notice line precedes it).
 *
 * Imports the compiler asks for (after the input's remappings) are read from, in order: the
 * base path (default: the project root), each --include-path, and the node_modules directory.
 * A path that starts with "node_modules/" or "@" is also looked up in node_modules directly.
 * node_modules is <project root>/node_modules, where the project root is two directories above
 * this script (it lives in offchain/chain/), as offchain/chain/compiler.py finds it.
 */
'use strict';

const fs = require('fs');
const path = require('path');

const PROJECT_ROOT = path.resolve(__dirname, '..', '..');
const NODE_MODULES = path.join(PROJECT_ROOT, 'node_modules');

function loadSolc() {
  try {
    return require(path.join(NODE_MODULES, 'solc'));
  } catch (err) {
    process.stderr.write(`cannot load npm "solc" from ${NODE_MODULES}: ${err.message}\n`);
    process.exit(2);
  }
}

function parseArgs(argv) {
  const opts = { version: false, standardJson: false, basePath: PROJECT_ROOT, includePaths: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--version') opts.version = true;
    else if (arg === '--standard-json') opts.standardJson = true;
    else if (arg === '--base-path') opts.basePath = path.resolve(argv[++i]);
    else if (arg === '--include-path') opts.includePaths.push(path.resolve(argv[++i]));
    else if (arg === '--allow-paths') i++; // reading is limited to the roots below anyway
    else {
      process.stderr.write(`unsupported argument: ${arg}\n`);
      process.exit(2);
    }
  }
  return opts;
}

function makeImportCallback(opts) {
  const roots = [opts.basePath, ...opts.includePaths, NODE_MODULES];
  return function findImport(importPath) {
    const candidates = roots.map((root) => path.join(root, importPath));
    if (importPath.startsWith('node_modules/')) {
      candidates.push(path.join(NODE_MODULES, importPath.slice('node_modules/'.length)));
    }
    for (const candidate of candidates) {
      // Refuse paths that escape their root ("../../etc/passwd").
      if (!roots.some((root) => candidate.startsWith(root + path.sep)) &&
          !candidate.startsWith(NODE_MODULES + path.sep)) continue;
      try {
        return { contents: fs.readFileSync(candidate, 'utf8') };
      } catch (_err) {
        // try the next root
      }
    }
    return { error: `File not found: ${importPath} (searched ${roots.join(', ')})` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const solc = loadSolc();
  if (opts.version) {
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (!opts.standardJson) {
    process.stderr.write('usage: solcjs_standard_json.js --version | --standard-json < input.json\n');
    process.exit(2);
  }
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => {
    const input = Buffer.concat(chunks).toString('utf8');
    const output = solc.compile(input, { import: makeImportCallback(opts) });
    process.stdout.write(output + '\n');
  });
}

main();
