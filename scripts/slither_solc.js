#!/usr/bin/env node
/*
 * The `solc` that scripts/slither.sh hands to slither (crytic-compile, `--solc-standard-json`).
 *
 * It is a thin layer over the project's solcjs stand-in, offchain/chain/solcjs_standard_json.js
 * (unchanged), which answers `--version` and `--standard-json`. crytic-compile's standard-JSON
 * platform builds the compiler input itself and has no way to set `settings.evmVersion`, so solc
 * 0.8.30 would compile for its default (osaka). This script fills in the project's settings
 * (offchain/chain/compiler.py SETTINGS) where the input leaves them out, then delegates:
 *
 *   settings.evmVersion  <- $SLITHER_EVM_VERSION or "cancun"   (only if absent)
 *   settings.optimizer   <- {enabled: true, runs: 200}          (only if absent or without runs)
 *
 * Every other argument and the compiler's output pass through untouched.
 */
'use strict';

const path = require('path');
const { spawnSync } = require('child_process');

const STAND_IN = path.resolve(__dirname, '..', 'offchain', 'chain', 'solcjs_standard_json.js');
const EVM_VERSION = process.env.SLITHER_EVM_VERSION || 'cancun';

function delegate(args, input) {
  const result = spawnSync(process.execPath, [STAND_IN, ...args], {
    input,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'inherit', 'inherit'],
    maxBuffer: 1 << 30,
  });
  if (result.error) {
    process.stderr.write(`slither_solc: cannot run ${STAND_IN}: ${result.error.message}\n`);
    process.exit(2);
  }
  process.exit(result.status === null ? 2 : result.status);
}

function withProjectSettings(text) {
  const input = JSON.parse(text);
  const settings = (input.settings = input.settings || {});
  if (!settings.evmVersion) settings.evmVersion = EVM_VERSION;
  if (!settings.optimizer) settings.optimizer = { enabled: true, runs: 200 };
  if (settings.optimizer.enabled && settings.optimizer.runs === undefined) {
    settings.optimizer.runs = 200;
  }
  return JSON.stringify(input);
}

function main() {
  const args = process.argv.slice(2);
  if (!args.includes('--standard-json')) {
    delegate(args); // --version, or an error message from the stand-in
    return;
  }
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => {
    let input;
    try {
      input = withProjectSettings(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      process.stderr.write(`slither_solc: standard-JSON input is not valid JSON: ${err.message}\n`);
      process.exit(2);
    }
    delegate(args, input);
  });
}

main();
