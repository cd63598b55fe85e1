// The SPC-4 persistent-reservation engine: state, queries and the command entry point.
export * from './state';
export * from './access';
export * from './options';
export * from './engine';
