/**
 * The start-up check that every path a variable names lies inside this process's
 * permissions. The server runs with `--allow-read=.` and `--allow-write=./data`
 * (README "Permissions"): a data directory, an error-page directory or a CA file
 * elsewhere would otherwise fail later, deep inside a retry loop or as Deno's own
 * "Requires read access" exit. Here it is a configuration problem, one line per
 * path, naming the variable, the path and the flag to add.
 *
 * Asks `Deno.permissions.querySync` only (no prompt, nothing opened).
 */

/** What the server will do with one path, and which variable named it. */
export interface PathNeed {
  variable: string;
  path: string;
  access: readonly ("read" | "write")[];
  /** Where the `server` task's flags already allow it. */
  allowedUnder: string;
}

const value = (env: Record<string, string | undefined>, name: string): string | undefined => {
  const v = env[name]?.trim();
  return v === "" ? undefined : v;
};

/**
 * The paths the server will touch for this environment: the data directory
 * (read and write; unused only when both `HOP_DB_DSN` and `HOP_SECRET_KEY` are
 * set), the error-page directory and the ACME CA file (read).
 */
export function pathNeeds(env: Record<string, string | undefined>): PathNeed[] {
  const needs: PathNeed[] = [];
  if (value(env, "HOP_DB_DSN") === undefined || value(env, "HOP_SECRET_KEY") === undefined) {
    needs.push({
      variable: "HOP_DATA_DIR",
      path: value(env, "HOP_DATA_DIR") ?? "./data",
      access: ["read", "write"],
      allowedUnder: "./data",
    });
  }
  for (const variable of ["HOP_SERVER_ERROR_PAGES_DIR", "HOP_ACME_CA_CERT"]) {
    const path = value(env, variable);
    if (path !== undefined) needs.push({ variable, path, access: ["read"], allowedUnder: "." });
  }
  return needs;
}

/**
 * One line per path outside the granted permissions, e.g.
 * `HOP_DATA_DIR: /srv/hopgate is outside this process's permissions (...):
 * add --allow-read=/srv/hopgate --allow-write=/srv/hopgate ...`.
 * Empty when everything is granted.
 */
export function pathPermissionProblems(env: Record<string, string | undefined>): string[] {
  const problems: string[] = [];
  for (const need of pathNeeds(env)) {
    const missing = need.access.filter((name) =>
      Deno.permissions.querySync({ name, path: need.path }).state !== "granted"
    );
    if (missing.length === 0) continue;
    const flags = missing.map((name) => `--allow-${name}=${need.path}`).join(" ");
    problems.push(
      `${need.variable}: ${need.path} is outside this process's permissions ` +
        `(no ${missing.join(" or ")} access): add ${flags} to the deno run flags ` +
        `(README "Permissions"), or keep it under ${need.allowedUnder}`,
    );
  }
  return problems;
}
