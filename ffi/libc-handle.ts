// The one handle on the C library. Every ffi module declares its libc functions on it, so
// libc.so.6 is opened in one place however many modules call into it.

import koffi from 'koffi';

export const libcHandle = koffi.load('libc.so.6');
