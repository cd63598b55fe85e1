#!/usr/bin/env node
import { runCli } from './program';

runCli(process.argv.slice(2)).then((code) => {
  // `serve` never resolves; every other command ends here with its sg3_utils-style code.
  process.exitCode = code;
});
