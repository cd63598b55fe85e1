// Thin typed wrappers over the libc calls Node does not expose: AF_UNIX sockets with
// SCM_RIGHTS fd passing, peer credentials, fcntl access modes, statx, and fd readiness.
// Every wrapper returns plain JS values. errno is read immediately after the native call
// (before any other koffi call can overwrite it) and thrown as a SystemCallError.
// "Would block" (EAGAIN) is an expected answer on nonblocking fds, so it is returned as
// `null` instead of being thrown. Layouts are those of Linux LP64 (x86-64, aarch64).
//
// This module is the one import for all of it; each seam lives in its own file.

export { errnoName, LinuxErrno } from './errno';
export { SystemCallError } from './system-call';
export * from './unix-socket';
export * from './scm-rights';
export * from './fd-io';
export * from './fd-status';
export * from './fd-watcher';
