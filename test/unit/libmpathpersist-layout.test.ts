// Compares the koffi declarations of ffi/libmpathpersist.ts with what the C compiler makes
// of the installed <mpath_persist.h>. A mismatch means the library would read or write the
// wrong bytes, so this test must run wherever the mpath backend is built: a missing header or
// compiler is a failure with instructions, never a skip.

import { expect } from 'chai';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import koffi, { type TypeObject } from 'koffi';
import {
  FULLDESCR_DESCRIPTORS_OFFSET,
  MPATH_F_ALL_TG_PT_MASK,
  MPATH_F_APTPL_MASK,
  MPATH_F_SPEC_I_PT_MASK,
  MPATH_MAX_PARAM_LEN,
  MPATH_MX_TIDS,
  MPATH_MX_TID_LEN,
  MPATH_PR,
  MPATH_PRIN,
  MPATH_PROUT,
  MPATH_PROTOCOL_ID,
  MPATH_WWUI_PORT_IDENTIFIER,
  PrinCapDescr,
  PrinFullDescr,
  PrinReadDescr,
  PrinResp,
  PrinResvDescr,
  PrintFullDescrList,
  prepareProutBlock,
  PROUT_TRNPTID_LIST_OFFSET,
  ProutParamDescriptor,
  RFSTAT_LIBRARY_ALLOCATION,
  RFSTAT_RESPONSE_BYTES,
  TransportId,
} from '../../ffi/libmpathpersist';
import { encodeTransportId } from '../../src/scsi/transport-id';

const HEADER = '/usr/include/mpath_persist.h';

type Probe = { label: string; c: string; ours: number };

const probes: Probe[] = [];
function unionMemberOffset(type: TypeObject, member: string): number {
  const found = type.members?.[member];
  if (!found) throw new Error(`${type.name} has no member ${member}`);
  return found.offset;
}
function sizeAndAlign(cType: string, type: TypeObject): void {
  probes.push({ label: `sizeof(${cType})`, c: `sizeof(${cType})`, ours: koffi.sizeof(type) });
  probes.push({ label: `_Alignof(${cType})`, c: `_Alignof(${cType})`, ours: koffi.alignof(type) });
}
function fields(cType: string, type: TypeObject, names: string[]): void {
  for (const name of names) probes.push({ label: `offsetof(${cType}, ${name})`, c: `offsetof(${cType}, ${name})`, ours: koffi.offsetof(type, name) });
}
function constant(name: string, ours: number): void {
  probes.push({ label: name, c: `(long)(${name})`, ours });
}

sizeAndAlign('struct prin_readdescr', PrinReadDescr);
fields('struct prin_readdescr', PrinReadDescr, ['prgeneration', 'additional_length', 'key_list']);
sizeAndAlign('struct prin_resvdescr', PrinResvDescr);
fields('struct prin_resvdescr', PrinResvDescr, ['prgeneration', 'additional_length', 'key', '_obsolete', '_reserved', 'scope_type', '_obsolete1']);
sizeAndAlign('struct prin_capdescr', PrinCapDescr);
fields('struct prin_capdescr', PrinCapDescr, ['length', 'flags', 'pr_type_mask', '_reserved']);
sizeAndAlign('struct transportid', TransportId);
fields('struct transportid', TransportId, ['format_code', 'protocol_id']);
for (const member of ['n_port_name', 'sas_address', 'iscsi_name']) {
  probes.push({ label: `offsetof(struct transportid, ${member})`, c: `offsetof(struct transportid, ${member})`, ours: koffi.offsetof(TransportId, 'name') });
}
sizeAndAlign('struct prin_fulldescr', PrinFullDescr);
fields('struct prin_fulldescr', PrinFullDescr, ['key', 'flag', 'scope_type', 'rtpi', 'trnptid']);
sizeAndAlign('struct print_fulldescr_list', PrintFullDescrList);
fields('struct print_fulldescr_list', PrintFullDescrList, ['prgeneration', 'number_of_descriptor', 'private_buffer']);
probes.push({ label: 'offsetof(struct print_fulldescr_list, descriptors)', c: 'offsetof(struct print_fulldescr_list, descriptors)', ours: FULLDESCR_DESCRIPTORS_OFFSET });
sizeAndAlign('struct prin_resp', PrinResp);
for (const member of ['prin_readkeys', 'prin_readresv', 'prin_readcap', 'prin_readfd']) {
  probes.push({ label: `offsetof(struct prin_resp, prin_descriptor.${member})`, c: `offsetof(struct prin_resp, prin_descriptor.${member})`, ours: unionMemberOffset(PrinResp, member) });
}
sizeAndAlign('struct prout_param_descriptor', ProutParamDescriptor);
fields('struct prout_param_descriptor', ProutParamDescriptor, ['key', 'sa_key', '_obsolete', 'sa_flags', '_reserved', '_obsolete1', 'private_buffer', 'num_transportid']);
probes.push({ label: 'offsetof(struct prout_param_descriptor, trnptid_list)', c: 'offsetof(struct prout_param_descriptor, trnptid_list)', ours: PROUT_TRNPTID_LIST_OFFSET });
// What mpath_alloc_prin_response(MPATH_PRIN_RFSTAT_SA) allocates.
probes.push({ label: 'RFSTAT allocation', c: 'sizeof(struct print_fulldescr_list) + sizeof(struct prin_fulldescr *) * MPATH_MX_TIDS', ours: RFSTAT_LIBRARY_ALLOCATION });

/** Each C macro of mpath_persist.h and the value ffi/libmpathpersist.ts uses for it. */
const MACROS: Record<string, number> = {
  MPATH_MAX_PARAM_LEN,
  MPATH_MX_TIDS,
  MPATH_MX_TID_LEN,
  ...Object.fromEntries(Object.entries(MPATH_PR).filter(([, value]) => value <= 15).map(([name, value]) => [`MPATH_PR_${name}`, value])),
  MPATH_PRIN_RKEY_SA: MPATH_PRIN.READ_KEYS,
  MPATH_PRIN_RRES_SA: MPATH_PRIN.READ_RESERVATION,
  MPATH_PRIN_RCAP_SA: MPATH_PRIN.REPORT_CAPABILITIES,
  MPATH_PRIN_RFSTAT_SA: MPATH_PRIN.READ_FULL_STATUS,
  MPATH_PROUT_REG_SA: MPATH_PROUT.REGISTER,
  MPATH_PROUT_RES_SA: MPATH_PROUT.RESERVE,
  MPATH_PROUT_REL_SA: MPATH_PROUT.RELEASE,
  MPATH_PROUT_CLEAR_SA: MPATH_PROUT.CLEAR,
  MPATH_PROUT_PREE_SA: MPATH_PROUT.PREEMPT,
  MPATH_PROUT_PREE_AB_SA: MPATH_PROUT.PREEMPT_AND_ABORT,
  MPATH_PROUT_REG_IGN_SA: MPATH_PROUT.REGISTER_AND_IGNORE,
  MPATH_PROUT_REG_MOV_SA: MPATH_PROUT.REGISTER_AND_MOVE,
  MPATH_F_APTPL_MASK,
  MPATH_F_ALL_TG_PT_MASK,
  MPATH_F_SPEC_I_PT_MASK,
  MPATH_PROTOCOL_ID_FC: MPATH_PROTOCOL_ID.FC,
  MPATH_PROTOCOL_ID_ISCSI: MPATH_PROTOCOL_ID.ISCSI,
  MPATH_PROTOCOL_ID_SAS: MPATH_PROTOCOL_ID.SAS,
  MPATH_WWUI_PORT_IDENTIFIER,
};
for (const [name, value] of Object.entries(MACROS)) constant(name, value);

function requireHeader(): void {
  if (!fs.existsSync(HEADER)) {
    throw new Error(
      `${HEADER} is missing: the libmpathpersist struct layouts cannot be checked. ` +
        'Install it with `apt-get install -y multipath-tools` (Debian 12 ships the header in that package; ' +
        'other distributions: device-mapper-multipath-devel / libmpathpersist-dev).',
    );
  }
}

function gcc(args: string[]): void {
  try {
    execFileSync('gcc', args, { stdio: 'pipe' });
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('gcc is not installed; install it with `apt-get install -y gcc` to check the libmpathpersist layouts');
    throw new Error(`gcc ${args.join(' ')} failed:\n${e.stderr?.toString() ?? String(err)}`);
  }
}

function compileAndRun(): Map<string, number> {
  requireHeader();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-layout-'));
  try {
    const lines = probes.map((p, i) => `  printf("%d %ld\\n", ${i}, (long)(${p.c}));`);
    const source = ['#include <stddef.h>', '#include <stdio.h>', `#include <mpath_persist.h>`, 'int main(void) {', ...lines, '  return 0;', '}', ''].join('\n');
    fs.writeFileSync(path.join(dir, 'layout.c'), source);
    gcc(['-std=gnu11', '-o', path.join(dir, 'layout'), path.join(dir, 'layout.c')]);
    const out = execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' });
    const result = new Map<string, number>();
    for (const line of out.trim().split('\n')) {
      const [index, value] = line.split(' ');
      result.set(probes[Number(index)].label, Number(value));
    }
    return result;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('libmpathpersist layouts against the installed <mpath_persist.h>', function () {
  let measured: Map<string, number>;

  before(function () {
    this.timeout(60000);
    measured = compileAndRun();
  });

  it('measures every probe', function () {
    expect(measured.size).to.equal(probes.length);
  });

  it('matches sizeof, _Alignof, offsetof and the constants of the header, one by one', function () {
    const mismatches = probes.filter((p) => measured.get(p.label) !== p.ours).map((p) => `${p.label}: C says ${measured.get(p.label)}, koffi says ${p.ours}`);
    expect(mismatches, mismatches.join('\n')).to.deep.equal([]);
  });

  it('matches the x86-64 layouts recorded in the reference', function () {
    // Independent of the header: a second source for the numbers the code relies on.
    expect(koffi.sizeof(PrinResp)).to.equal(8200);
    expect(koffi.sizeof(TransportId)).to.equal(258);
    expect(koffi.sizeof(PrinFullDescr)).to.equal(270);
    expect(koffi.sizeof(ProutParamDescriptor)).to.equal(8224);
    expect(koffi.offsetof(ProutParamDescriptor, 'num_transportid')).to.equal(8216);
    expect(RFSTAT_LIBRARY_ALLOCATION).to.equal(8456);
  });

  it('allocates READ FULL STATUS answers large enough for every write the library can make', function () {
    // At most ceil(8192/24)+1 descriptors, each 270 bytes from offset 8, plus a pointer each from 8200.
    const iterations = Math.ceil(MPATH_MAX_PARAM_LEN / 24) + 1;
    const lastEntryEnd = 8 + koffi.sizeof(PrinFullDescr) * iterations;
    const lastPointerEnd = FULLDESCR_DESCRIPTORS_OFFSET + 8 * iterations;
    expect(RFSTAT_RESPONSE_BYTES).to.be.at.least(Math.max(lastEntryEnd, lastPointerEnd, RFSTAT_LIBRARY_ALLOCATION));
  });
});

// C code reads a block built by prepareProutBlock() through the header's own struct and the
// trnptid_list pointers, as libmpathpersist's format_transportids() does.
const PROUT_PROBE = String.raw`
#include <stdio.h>
#include <string.h>
#include <mpath_persist.h>
int describe(struct prout_param_descriptor *p, char *out, int size) {
  int n = snprintf(out, size, "key=%02x%02x sa_key=%02x%02x flags=%u n=%u",
                   p->key[6], p->key[7], p->sa_key[6], p->sa_key[7], p->sa_flags, p->num_transportid);
  for (unsigned i = 0; i < p->num_transportid; i++) {
    struct transportid *t = p->trnptid_list[i];
    if (t->protocol_id == MPATH_PROTOCOL_ID_ISCSI)
      n += snprintf(out + n, size - n, " [fmt=%02x proto=%u len=%u name=%s]", t->format_code, t->protocol_id,
                    (t->iscsi_name[0] << 8) | t->iscsi_name[1], (char *)&t->iscsi_name[2]);
    else
      n += snprintf(out + n, size - n, " [fmt=%02x proto=%u addr=%02x%02x..%02x]", t->format_code, t->protocol_id,
                    t->sas_address[0], t->sas_address[1], t->sas_address[7]);
  }
  return n;
}
`;

describe('libmpathpersist PR OUT block as C sees it', function () {
  it('C follows the trnptid_list pointers of a prepared block to the transport IDs', function () {
    this.timeout(60000);
    requireHeader();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpath-prout-'));
    try {
      fs.writeFileSync(path.join(dir, 'probe.c'), PROUT_PROBE);
      const lib = path.join(dir, 'probe.so');
      gcc(['-std=gnu11', '-shared', '-fPIC', '-o', lib, path.join(dir, 'probe.c')]);
      const handle = koffi.load(lib);
      const describe = handle.func('int describe(void *p, _Out_ uint8_t *out, int size)');
      // The iSCSI name as struct transportid holds it: the SPC-4 TransportID from ADDITIONAL LENGTH (24) on.
      const iscsi = encodeTransportId({ protocol: 'iscsi', name: 'iqn.2026-11.lab:host' }).subarray(2);
      const block = prepareProutBlock({
        key: 0xabcdn,
        serviceActionKey: 0x1234n,
        flags: 0x09,
        transportIds: [
          { formatCode: 0, protocolId: 6, name: Buffer.from('5000c50012345678', 'hex') },
          { formatCode: 0x40, protocolId: 5, name: iscsi },
        ],
      });
      const out = Buffer.alloc(512);
      const n = describe(block, out, out.length) as number;
      handle.unload();
      expect(out.subarray(0, n).toString()).to.equal(
        'key=abcd sa_key=1234 flags=9 n=2 [fmt=00 proto=6 addr=5000..78] [fmt=40 proto=5 len=24 name=iqn.2026-11.lab:host]',
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
