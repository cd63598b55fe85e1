// VPD page 83h (Device Identification, SPC-4 7.8.6): the one designator the multipath
// backend needs, the relative target port identifier of the target port a path goes
// through. Pure; the page comes from /sys/class/block/<sd>/device/vpd_pg83 or INQUIRY.

const DEVICE_IDENTIFICATION_PAGE = 0x83;
const DESIGNATOR_HEADER = 4;
/** Designator type 4h: relative target port identifier. */
const RELATIVE_TARGET_PORT_TYPE = 0x4;
/** Association 01b: the designator names the target port the command came through. */
const TARGET_PORT_ASSOCIATION = 0x1;

/** The relative target port identifier in a VPD page 83h, or undefined if it has none or is malformed. */
export function relativeTargetPortOf(page: Uint8Array): number | undefined {
  if (page.length < 4 || page[1] !== DEVICE_IDENTIFICATION_PAGE) return undefined;
  const end = Math.min(page.length, 4 + ((page[2] << 8) | page[3]));
  for (let offset = 4; offset + DESIGNATOR_HEADER <= end; ) {
    const type = page[offset + 1] & 0x0f;
    const association = (page[offset + 1] >> 4) & 0x03;
    const length = page[offset + 3];
    if (offset + DESIGNATOR_HEADER + length > end) return undefined;
    // The designator is 4 bytes: two reserved, then the identifier.
    if (type === RELATIVE_TARGET_PORT_TYPE && association === TARGET_PORT_ASSOCIATION && length === 4) {
      const port = (page[offset + 6] << 8) | page[offset + 7];
      return port === 0 ? undefined : port;
    }
    offset += DESIGNATOR_HEADER + length;
  }
  return undefined;
}
