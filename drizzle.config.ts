// drizzle-kit configuration: `deno task db:generate` writes SQL migrations for
// db/schema.ts into db/migrations/ (committed; applied at start-up by migrate()).
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./db/schema.ts",
  out: "./db/migrations",
  strict: true,
});
