// A stand-in for the libmpathpersist worker child (src/backends/mpath/mpath-worker.ts), for
// tests of the mpath backend without a dm-multipath map. The test says by name what the
// "library" does with a PR OUT, per map if it likes; the stand-in records every request it
// received, so a test sees exactly what would have reached the library. PR IN answers rc 0
// with READ KEYS data holding one key, 0xabc (generation 7).
//
// The script is a file the stand-in reads at each request, so a test may change it between
// commands, and it applies to every worker the backend starts (one per map).

import * as fs from 'fs';
import * as path from 'path';

export type StandInPrOut =
  /** The library returns this MPATH_PR_* code (0 is MPATH_PR_SUCCESS). */
  | { readonly rc: number }
  /** The child exits with status 1 mid-call, as libmultipath does when dm_prereq fails. */
  | 'exit'
  /** The call never returns, like one on a map whose paths are all down. */
  | 'hang'
  /** The worker answers `error` without calling the library: the map could not be opened. */
  | 'error';

export interface StandInScript {
  /** What a PR OUT does on any map (default: rc 0). */
  readonly prOut?: StandInPrOut;
  /** What a PR OUT does on these maps, by the path the backend names the map by. */
  readonly prOutOn?: Readonly<Record<string, StandInPrOut>>;
}

/** The environment variables the stand-in child reads. */
export const STAND_IN_ENV = { script: 'MPATH_STAND_IN_SCRIPT', received: 'MPATH_STAND_IN_RECEIVED' } as const;

let instances = 0;

export class MpathStandIn {
  /** For MpathBackendOptions.worker / MpathWorkerClient: run the stand-in instead of the real worker. */
  readonly worker: { readonly workerPath: string; readonly env: NodeJS.ProcessEnv };
  private readonly scriptFile: string;
  private readonly receivedFile: string;

  /** Keeps its files in `dir`; each instance has its own. */
  constructor(dir: string, script: StandInScript = {}) {
    const id = `${process.pid}-${++instances}`;
    this.scriptFile = path.join(dir, `stand-in-script-${id}.json`);
    this.receivedFile = path.join(dir, `stand-in-received-${id}.jsonl`);
    this.script(script);
    this.worker = {
      workerPath: path.join(__dirname, 'mpath-stand-in-worker.js'),
      env: { [STAND_IN_ENV.script]: this.scriptFile, [STAND_IN_ENV.received]: this.receivedFile },
    };
  }

  /** What the stand-in does from the next request on. */
  script(script: StandInScript): void {
    fs.writeFileSync(this.scriptFile, JSON.stringify(script));
  }

  /** Every request received so far, in order, as JSON (a bigint b as the string 'n' + b in hex). */
  received(): Array<Record<string, unknown>> {
    if (!fs.existsSync(this.receivedFile)) return [];
    return fs
      .readFileSync(this.receivedFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}
