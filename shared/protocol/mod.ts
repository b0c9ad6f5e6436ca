/** Pure codecs of the tunnel protocol (no I/O beyond reading a given stream). */
export * from "./head.ts";
export * from "./ws_frames.ts";
export * from "./http.ts";
