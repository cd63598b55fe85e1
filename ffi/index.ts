// The native surface of the project, one module per library.
export * as libc from './libc';
