// The koffi declarations of sg_io_hdr and the <linux/pr.h> structs must match what the C
// compiler makes of the system headers: a wrong offset would make the kernel read garbage
// pointers. This compiles a small program against <scsi/sg.h> and <linux/pr.h> and compares
// every offset, every size and every ioctl number.

import { expect } from 'chai';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import koffi, { type TypeObject } from 'koffi';
import { SG_IO, SgDxfer, SgIoHdr } from '../../ffi/sg-io';
import {
  BlockPrType,
  IOC_PR_CLEAR,
  IOC_PR_PREEMPT,
  IOC_PR_PREEMPT_ABORT,
  IOC_PR_REGISTER,
  IOC_PR_RELEASE,
  IOC_PR_RESERVE,
  PR_FL_IGNORE_KEY,
  PrClear,
  PrPreempt,
  PrRegistration,
  PrReservation,
} from '../../ffi/block-pr';

const SG_FIELDS = [
  'interface_id', 'dxfer_direction', 'cmd_len', 'mx_sb_len', 'iovec_count', 'dxfer_len', 'dxferp', 'cmdp', 'sbp',
  'timeout', 'flags', 'pack_id', 'usr_ptr', 'status', 'masked_status', 'msg_status', 'sb_len_wr', 'host_status',
  'driver_status', 'resid', 'duration', 'info',
];
const PR_STRUCTS: Record<string, { fields: string[]; koffiType: TypeObject }> = {
  pr_registration: { fields: ['old_key', 'new_key', 'flags', '__pad'], koffiType: PrRegistration },
  pr_reservation: { fields: ['key', 'type', 'flags'], koffiType: PrReservation },
  pr_preempt: { fields: ['old_key', 'new_key', 'type', 'flags'], koffiType: PrPreempt },
  pr_clear: { fields: ['key', 'flags', '__pad'], koffiType: PrClear },
};
const CONSTANTS = [
  'SG_IO', 'SG_DXFER_NONE', 'SG_DXFER_TO_DEV', 'SG_DXFER_FROM_DEV', 'IOC_PR_REGISTER', 'IOC_PR_RESERVE', 'IOC_PR_RELEASE',
  'IOC_PR_PREEMPT', 'IOC_PR_PREEMPT_ABORT', 'IOC_PR_CLEAR', 'PR_FL_IGNORE_KEY', 'PR_WRITE_EXCLUSIVE', 'PR_EXCLUSIVE_ACCESS',
  'PR_WRITE_EXCLUSIVE_REG_ONLY', 'PR_EXCLUSIVE_ACCESS_REG_ONLY', 'PR_WRITE_EXCLUSIVE_ALL_REGS', 'PR_EXCLUSIVE_ACCESS_ALL_REGS',
];

function cProgram(): string {
  const lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <sys/ioctl.h>', '#include <scsi/sg.h>', '#include <linux/pr.h>', 'int main(void) {'];
  lines.push('printf("sizeof sg_io_hdr %zu\\n", sizeof(struct sg_io_hdr));');
  for (const f of SG_FIELDS) lines.push(`printf("offsetof sg_io_hdr.${f} %zu\\n", offsetof(struct sg_io_hdr, ${f}));`);
  for (const [name, { fields }] of Object.entries(PR_STRUCTS)) {
    lines.push(`printf("sizeof ${name} %zu\\n", sizeof(struct ${name}));`);
    for (const f of fields) lines.push(`printf("offsetof ${name}.${f} %zu\\n", offsetof(struct ${name}, ${f}));`);
  }
  for (const c of CONSTANTS) lines.push(`printf("const ${c} %ld\\n", (long)(${c}));`);
  lines.push('return 0; }');
  return lines.join('\n');
}

describe('ffi struct layouts and ioctl numbers (checked against gcc and the system headers)', function () {
  let facts: Map<string, number>;

  before(function () {
    let compiler: string | undefined;
    for (const candidate of ['gcc', 'cc']) {
      try {
        execFileSync(candidate, ['--version'], { stdio: 'ignore' });
        compiler = candidate;
        break;
      } catch {
        // try the next one
      }
    }
    if (!compiler) throw new Error('no C compiler (gcc/cc) on PATH: the layout check cannot run; install gcc and the kernel UAPI headers');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpr-layout-'));
    try {
      fs.writeFileSync(path.join(dir, 'layout.c'), cProgram());
      execFileSync(compiler, ['-o', path.join(dir, 'layout'), path.join(dir, 'layout.c')]);
      const out = execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' });
      facts = new Map(out.trim().split('\n').map((line) => {
        const [, key, value] = line.split(' ');
        return [key, Number(value)] as [string, number];
      }));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sg_io_hdr: size and every field offset', function () {
    expect(koffi.sizeof(SgIoHdr)).to.equal(facts.get('sg_io_hdr'));
    for (const f of SG_FIELDS) expect(koffi.offsetof(SgIoHdr, f), f).to.equal(facts.get(`sg_io_hdr.${f}`));
  });

  it('SG_IO and the transfer directions', function () {
    expect(SG_IO).to.equal(facts.get('SG_IO'));
    expect(SgDxfer.NONE).to.equal(facts.get('SG_DXFER_NONE'));
    expect(SgDxfer.TO_DEV).to.equal(facts.get('SG_DXFER_TO_DEV'));
    expect(SgDxfer.FROM_DEV).to.equal(facts.get('SG_DXFER_FROM_DEV'));
  });

  for (const [name, { fields, koffiType }] of Object.entries(PR_STRUCTS)) {
    it(`${name}: size and every field offset`, function () {
      expect(koffi.sizeof(koffiType)).to.equal(facts.get(name));
      for (const f of fields) expect(koffi.offsetof(koffiType, f), f).to.equal(facts.get(`${name}.${f}`));
    });
  }

  it('IOC_PR_* numbers, PR_FL_IGNORE_KEY and enum pr_type', function () {
    expect(IOC_PR_REGISTER).to.equal(facts.get('IOC_PR_REGISTER'));
    expect(IOC_PR_RESERVE).to.equal(facts.get('IOC_PR_RESERVE'));
    expect(IOC_PR_RELEASE).to.equal(facts.get('IOC_PR_RELEASE'));
    expect(IOC_PR_PREEMPT).to.equal(facts.get('IOC_PR_PREEMPT'));
    expect(IOC_PR_PREEMPT_ABORT).to.equal(facts.get('IOC_PR_PREEMPT_ABORT'));
    expect(IOC_PR_CLEAR).to.equal(facts.get('IOC_PR_CLEAR'));
    expect(PR_FL_IGNORE_KEY).to.equal(facts.get('PR_FL_IGNORE_KEY'));
    expect(BlockPrType.WRITE_EXCLUSIVE).to.equal(facts.get('PR_WRITE_EXCLUSIVE'));
    expect(BlockPrType.EXCLUSIVE_ACCESS).to.equal(facts.get('PR_EXCLUSIVE_ACCESS'));
    expect(BlockPrType.WRITE_EXCLUSIVE_REG_ONLY).to.equal(facts.get('PR_WRITE_EXCLUSIVE_REG_ONLY'));
    expect(BlockPrType.EXCLUSIVE_ACCESS_REG_ONLY).to.equal(facts.get('PR_EXCLUSIVE_ACCESS_REG_ONLY'));
    expect(BlockPrType.WRITE_EXCLUSIVE_ALL_REGS).to.equal(facts.get('PR_WRITE_EXCLUSIVE_ALL_REGS'));
    expect(BlockPrType.EXCLUSIVE_ACCESS_ALL_REGS).to.equal(facts.get('PR_EXCLUSIVE_ACCESS_ALL_REGS'));
  });
});
