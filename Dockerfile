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
# Permissions: net for the listeners and PostgreSQL; read the code and data; write only
# the data directory; only HOP_* variables; hostname for the PostgreSQL driver.
CMD ["deno", "run", "--allow-net", "--allow-read=/app", "--allow-write=/app/data", "--allow-env=HOP_*,PG*", "--allow-sys=hostname", "server/main.ts"]
