/** The admin API's public face. */
export {
  ADMIN_BASE_PATH,
  createAdminApp,
  createAdminHandler,
  isAdminRequest,
  type ServeInfo,
} from "./app.ts";
export type { AdminConfig, AdminDeps, AdminEnv } from "./env.ts";
export { type Cidr, ipInRanges, isLoopback, parseCidr, parseCidrList } from "./cidr.ts";
