// enum pr_type of <linux/pr.h>, as plain data: no koffi, so the pure PR OUT → IOC_PR_*
// translation (src/backends/blkpr/translate.ts) uses it without loading anything native.

/** enum pr_type from <linux/pr.h>. These are NOT the SCSI TYPE codes (1,3,5,6,7,8). */
export const BlockPrType = {
  WRITE_EXCLUSIVE: 1,
  EXCLUSIVE_ACCESS: 2,
  WRITE_EXCLUSIVE_REG_ONLY: 3,
  EXCLUSIVE_ACCESS_REG_ONLY: 4,
  WRITE_EXCLUSIVE_ALL_REGS: 5,
  EXCLUSIVE_ACCESS_ALL_REGS: 6,
} as const;
export type BlockPrTypeCode = (typeof BlockPrType)[keyof typeof BlockPrType];
