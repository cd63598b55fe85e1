// The qemu-pr-helper protocol: codec, server and client.
export * from './messages';
export * from './parser';
export * from './serializer';
export { PrHelperServer } from './server';
export type { PrHelperExecute, PrHelperExecuteRequest, PrHelperServerOptions, PrHelperServerStats, ConnectionClosedEvent } from './server-contract';
export { removeStaleSocket, DEFAULT_SOCKET_MODE } from './listener';
export type { ListenTarget } from './listener';
export { PrHelperClient } from './client';
export type { PrHelperClientOptions } from './client';
export { ConnectionClosedError, FdConnection } from './fd-connection';
export { socketActivationFd, clearSocketActivationEnv, SocketActivationError, FIRST_SOCKET_ACTIVATION_FD } from './socket-activation';
