// What the SPC-4 engine is told about the logical unit it decides for.

export interface EngineOptions {
  /** The LU's relative target port identifiers; ALL_TG_PT registers on each of them. */
  readonly targetPorts: readonly number[];
  /** Establish unit attentions for other nexuses (LIO does; default true). */
  readonly unitAttentions: boolean;
  /** Registrations (I_T nexuses) the LU can hold; beyond it INSUFFICIENT REGISTRATION RESOURCES. */
  readonly maxRegistrations: number;
  /**
   * ALLOW COMMANDS reported by REPORT CAPABILITIES. The engine only decides PR
   * commands and READ/WRITE medium access, so it has nothing to say about the other
   * commands the field describes: 000b ("no information") unless the backend knows better.
   */
  readonly allowCommands?: number;
}

export const DEFAULT_MAX_REGISTRATIONS = 128;

export function defaultEngineOptions(targetPorts: readonly number[]): EngineOptions {
  return { targetPorts: [...targetPorts], unitAttentions: true, maxRegistrations: DEFAULT_MAX_REGISTRATIONS };
}
