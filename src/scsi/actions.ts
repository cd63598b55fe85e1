// The one table of PERSISTENT RESERVE service actions: wire code, SPC-4 name, the short
// name the CLI (`mpath-pr out --register-ignore`), D-Bus and typed helpers use, and the
// sg_persist / mpathpersist option letter. Every other module derives what it shows from here.

import { PrInAction, PrOutAction, type PrInActionCode, type PrOutActionCode } from './constants';

export type PrOutActionName =
  | 'register'
  | 'register-ignore'
  | 'reserve'
  | 'release'
  | 'clear'
  | 'preempt'
  | 'preempt-abort'
  | 'register-move'
  | 'replace-lost';

export type PrInActionName = 'read-keys' | 'read-reservation' | 'report-capabilities' | 'read-full-status';

export interface PrOutActionInfo {
  readonly code: PrOutActionCode;
  readonly name: PrOutActionName;
  /** The name SPC-4 gives the service action. */
  readonly title: string;
  /** The mpathpersist / sg_persist short option, when the CLI offers the action. */
  readonly letter?: string;
  /** Whether the CDB's SCOPE and TYPE fields mean something for this action (SPC-4 PERSISTENT RESERVE OUT command). */
  readonly usesType: boolean;
}

export interface PrInActionInfo {
  readonly code: PrInActionCode;
  readonly name: PrInActionName;
  readonly title: string;
  readonly letter: string;
}

export const PR_OUT_ACTIONS: readonly PrOutActionInfo[] = [
  { code: PrOutAction.REGISTER, name: 'register', title: 'REGISTER', letter: 'G', usesType: false },
  { code: PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, name: 'register-ignore', title: 'REGISTER AND IGNORE EXISTING KEY', letter: 'I', usesType: false },
  { code: PrOutAction.RESERVE, name: 'reserve', title: 'RESERVE', letter: 'R', usesType: true },
  { code: PrOutAction.RELEASE, name: 'release', title: 'RELEASE', letter: 'L', usesType: true },
  { code: PrOutAction.CLEAR, name: 'clear', title: 'CLEAR', letter: 'C', usesType: false },
  { code: PrOutAction.PREEMPT, name: 'preempt', title: 'PREEMPT', letter: 'P', usesType: true },
  { code: PrOutAction.PREEMPT_AND_ABORT, name: 'preempt-abort', title: 'PREEMPT AND ABORT', letter: 'A', usesType: true },
  { code: PrOutAction.REGISTER_AND_MOVE, name: 'register-move', title: 'REGISTER AND MOVE', letter: 'M', usesType: true },
  { code: PrOutAction.REPLACE_LOST_RESERVATION, name: 'replace-lost', title: 'REPLACE LOST RESERVATION', usesType: true },
];

export const PR_IN_ACTIONS: readonly PrInActionInfo[] = [
  { code: PrInAction.READ_KEYS, name: 'read-keys', title: 'READ KEYS', letter: 'k' },
  { code: PrInAction.READ_RESERVATION, name: 'read-reservation', title: 'READ RESERVATION', letter: 'r' },
  { code: PrInAction.REPORT_CAPABILITIES, name: 'report-capabilities', title: 'REPORT CAPABILITIES', letter: 'c' },
  { code: PrInAction.READ_FULL_STATUS, name: 'read-full-status', title: 'READ FULL STATUS', letter: 's' },
];

const OUT_BY_CODE = new Map(PR_OUT_ACTIONS.map((a) => [a.code as number, a]));
const OUT_BY_NAME = new Map(PR_OUT_ACTIONS.map((a) => [a.name, a]));
const IN_BY_CODE = new Map(PR_IN_ACTIONS.map((a) => [a.code as number, a]));

export function prOutActionByCode(code: number): PrOutActionInfo | undefined {
  return OUT_BY_CODE.get(code);
}

export function prOutAction(name: PrOutActionName): PrOutActionInfo {
  return OUT_BY_NAME.get(name)!;
}

export function prInActionByCode(code: number): PrInActionInfo | undefined {
  return IN_BY_CODE.get(code);
}

/** The SPC-4 title of a PR OUT service action, or "service action 0xNN" for a reserved code. */
export function prOutTitle(code: number): string {
  return OUT_BY_CODE.get(code)?.title ?? `service action 0x${code.toString(16)}`;
}

/** The SPC-4 title of a PR IN service action, or "service action 0xNN" for a reserved code. */
export function prInTitle(code: number): string {
  return IN_BY_CODE.get(code)?.title ?? `service action 0x${code.toString(16)}`;
}
