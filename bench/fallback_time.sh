#!/bin/bash
# Time from the client's start to its first answered request when UDP is silently dropped
# (--transport auto: DTLS gets a 1.5 s head start, then the TCP path races it). A UDP sink takes
# the DTLS port's datagrams and answers none. Three runs; stops every process it started.
# Needs deno, curl, bc.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd); OUT=${OUT:-$(mktemp -d /tmp/hopgate-fallback.XXXXXX)}; P=18300; ORIGIN=$P HTTP=$((P+1)) DTLS=$((P+2)) SINK=$((P+3))
PIDS=(); cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; }; trap cleanup EXIT
cat > $OUT/origin.ts <<EOT
Deno.serve({ hostname: "127.0.0.1", port: $ORIGIN, onListen() {} }, () => new Response("ok"));
EOT
cat > $OUT/sink.ts <<EOT
const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: $SINK });
for await (const _ of s) { /* take it, answer nothing */ }
EOT
deno run --allow-net $OUT/origin.ts & PIDS+=($!)
deno run --allow-net --unstable-net $OUT/sink.ts & PIDS+=($!)
cd $ROOT
rm -rf $OUT/data; HOP_SERVER_DEBUG=true HOP_SERVER_DOMAIN=localhost HOP_SERVER_HTTP_LISTEN=127.0.0.1:$HTTP HOP_SERVER_HTTPS_LISTEN=127.0.0.1:0 \
 HOP_SERVER_DTLS_LISTEN=127.0.0.1:$DTLS HOP_ADMIN_API_KEY=fb-admin-key-0123456789 HOP_DATA_DIR=$OUT/data HOP_LOG_LEVEL=warn \
 deno run --allow-all server/main.ts > $OUT/server.log 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: localhost' "http://127.0.0.1:$HTTP/healthz" && break; sleep 0.2; done
KEY=$(curl -s -H 'Host: localhost' -H "Authorization: Bearer fb-admin-key-0123456789" -d '{"domain":"app.localhost"}' \
  "http://127.0.0.1:$HTTP/api/v1/admin/domains/register" | sed -nE 's/.*"client_api_key":"([^"]+)".*/\1/p')
for i in 1 2 3; do
  t0=$(date +%s.%N)
  HOP_CLIENT_API_KEY=$KEY deno run --allow-net --allow-read --allow-env client/main.ts --server-addr 127.0.0.1:$SINK --domain app.localhost \
    --local-target 127.0.0.1:$ORIGIN --transport auto --server-tcp-addr http://127.0.0.1:$HTTP --server-name localhost > $OUT/client$i.log 2>&1 & C=$!; PIDS+=($C)
  until [ "$(curl -s -H 'Host: app.localhost' http://127.0.0.1:$HTTP/)" = "ok" ]; do sleep 0.02; done
  t1=$(date +%s.%N); echo "run $i: first answer $(echo "$t1 - $t0" | bc) s after the client started"
  grep -m1 "connected" $OUT/client$i.log | cut -c1-160
  kill $C; wait $C 2>/dev/null; sleep 0.5
done
