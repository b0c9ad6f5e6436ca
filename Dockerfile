# HopGate server image. Stage 1 caches the npm dependencies from deno.lock; stage 2
# is the runtime: the Deno binary, the code and node_modules, run as a non-root user.
FROM denoland/deno:2.9.6 AS deps
WORKDIR /app
COPY deno.json deno.lock package.json ./
RUN deno install --frozen

FROM denoland/deno:2.9.6
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY deno.json deno.lock package.json ./
COPY shared ./shared
COPY server ./server
COPY db ./db
RUN deno cache server/main.ts && mkdir -p /app/data && chown deno:deno /app/data
USER deno
ENV HOP_DATA_DIR=/app/data
VOLUME /app/data
EXPOSE 80/tcp 443/tcp 443/udp
# SIGTERM drains in-flight requests for HOP_SHUTDOWN_TIMEOUT_SECONDS (default 30): give
# the container longer than that (docker run --stop-timeout 40, Kubernetes
# terminationGracePeriodSeconds: 40). Probes: GET /healthz, /readyz (Host: the server
# domain, or any Host on HOP_METRICS_LISTEN).
STOPSIGNAL SIGTERM
# Permissions, as in the `server` task (README "Permissions"): net for the listeners and
# PostgreSQL; read the code and data; write only the data directory; the environment
# minus other programs' credentials (acme-client's `debug` dependency lists the whole
# environment, so --allow-env cannot be scoped; --deny-env hides what it must not see);
# hostname for the PostgreSQL driver. --v8-flags=--liftoff-only: the embedded database's
# wasm stays on V8's baseline compiler: 25-45 MB less memory (README "Permissions").
CMD ["deno", "run", "--v8-flags=--liftoff-only", "--allow-net", "--allow-read=/app", "--allow-write=/app/data", "--allow-env", "--deny-env=HOP_CLIENT_*,AWS_*,AZURE_*,GOOGLE_*,GCP_*,GITHUB_*,GH_*,NPM_*,NODE_AUTH_TOKEN,DOCKER_*,SSH_*", "--allow-sys=hostname", "server/main.ts"]
