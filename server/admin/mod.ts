/**
 * The admin API's public face: a request handler for the public server to mount
 * (`createAdminHandler`, `isAdminRequest`), what it is built from, and the address
 * ranges of `HOP_ADMIN_ALLOWED_IPS`. Routes and errors: docs/admin-api.md.
 */
export { ADMIN_BASE_PATH, createAdminHandler, isAdminRequest, type ServeInfo } from "./app.ts";
export type { AdminConfig, AdminDeps, AdminEnv, AdminRequestContext, AdminTunnels } from "./env.ts";
export { type Cidr, ipInRanges, isLoopback, parseCidr, parseCidrList } from "./cidr.ts";
export type { Secret } from "../../shared/config.ts";
export type { LogFields, Logger } from "../log.ts";
export type { PskLookup } from "../psk_store.ts";
export type { SessionInfo } from "../registry.ts";
