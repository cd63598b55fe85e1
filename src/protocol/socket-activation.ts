// systemd socket activation (sd_listen_fds(3)), with qemu-pr-helper's rules: exactly one
// inherited socket on fd 3, and no explicit socket path at the same time.

/** SD_LISTEN_FDS_START */
export const FIRST_SOCKET_ACTIVATION_FD = 3;

export class SocketActivationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SocketActivationError';
  }
}

/**
 * The listening fd systemd passed us, or undefined when we were not socket-activated
 * (LISTEN_PID unset or naming another process, as after a fork). Throws when
 * LISTEN_FDS is malformed, zero or greater than 1, or when an explicit path is also given.
 */
export function socketActivationFd(
  options: { env?: NodeJS.ProcessEnv; pid?: number; explicitPath?: string } = {},
): number | undefined {
  const env = options.env ?? process.env;
  const pid = options.pid ?? process.pid;
  if (env.LISTEN_PID === undefined || env.LISTEN_FDS === undefined) return undefined;
  if (!/^\d+$/.test(env.LISTEN_PID) || Number(env.LISTEN_PID) !== pid) return undefined;
  if (!/^\d+$/.test(env.LISTEN_FDS)) throw new SocketActivationError(`LISTEN_FDS is not a number: ${JSON.stringify(env.LISTEN_FDS)}`);
  const count = Number(env.LISTEN_FDS);
  if (count === 0) return undefined;
  if (count > 1) throw new SocketActivationError(`too many socket activation fds (LISTEN_FDS=${count}); exactly one is supported`);
  if (options.explicitPath !== undefined) {
    throw new SocketActivationError('a socket path cannot be given when socket activation is used');
  }
  return FIRST_SOCKET_ACTIVATION_FD;
}

/** Removes the activation variables so child processes do not think the socket is theirs. */
export function clearSocketActivationEnv(env: NodeJS.ProcessEnv = process.env): void {
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
}
