/**
 * rsocket-js 1.0.0-alpha.3 encodes frames with Node's global `Buffer`, which browsers lack.
 * esbuild injects this module so that every bare `Buffer` in the bundle (ours and rsocket-js's)
 * resolves to the `buffer` package instead of an undefined global.
 */
export { Buffer } from "buffer";
