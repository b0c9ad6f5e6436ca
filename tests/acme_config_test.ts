/** The certificate settings: HOP_ACME_CA_CERT and HOP_SERVER_HTTPS_REDIRECT. */
import assert from "node:assert/strict";
import { ConfigError, loadServerConfig, SERVER_ENV_NAMES } from "../server/config.ts";

const PROD = { HOP_SERVER_DOMAIN: "gw.example.com" };

function problems(env: Record<string, string>): string {
  try {
    loadServerConfig(env);
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e.problems.join("\n");
  }
  assert.fail("expected a ConfigError");
}

Deno.test("HOP_ACME_CA_CERT: reads a PEM file, names the variable when it cannot", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate-cfg-" });
  try {
    const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    await Deno.writeTextFile(`${dir}/ca.pem`, pem);
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate");
    assert.equal(loadServerConfig({ ...PROD, HOP_ACME_CA_CERT: `${dir}/ca.pem` }).acme.caCert, pem);
    assert.equal(loadServerConfig(PROD).acme.caCert, undefined);
    assert.match(
      problems({ ...PROD, HOP_ACME_CA_CERT: `${dir}/missing.pem` }),
      /HOP_ACME_CA_CERT: cannot read the file \(NotFound\)/,
    );
    assert.match(
      problems({ ...PROD, HOP_ACME_CA_CERT: `${dir}/junk.pem` }),
      /HOP_ACME_CA_CERT: expected a PEM file with at least one CERTIFICATE/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HOP_SERVER_HTTPS_REDIRECT: on by default, off in debug, either way when set", () => {
  assert.equal(loadServerConfig(PROD).httpsRedirect, true);
  assert.equal(loadServerConfig({ HOP_SERVER_DEBUG: "true" }).httpsRedirect, false);
  assert.equal(
    loadServerConfig({ ...PROD, HOP_SERVER_HTTPS_REDIRECT: "false" }).httpsRedirect,
    false,
  );
  assert.equal(
    loadServerConfig({ HOP_SERVER_DEBUG: "true", HOP_SERVER_HTTPS_REDIRECT: "on" }).httpsRedirect,
    true,
  );
  assert.match(
    problems({ ...PROD, HOP_SERVER_HTTPS_REDIRECT: "maybe" }),
    /HOP_SERVER_HTTPS_REDIRECT: expected true or false/,
  );
  for (const n of ["HOP_ACME_CA_CERT", "HOP_SERVER_HTTPS_REDIRECT"]) {
    assert.ok((SERVER_ENV_NAMES as readonly string[]).includes(n));
  }
});
