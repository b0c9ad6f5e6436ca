# HopGate as a target of the shared tunnel benchmark (../shared/bench/run.sh):
#   cp -r ../shared/bench /tmp/bench && (cd /tmp/bench && npm install)
#   /tmp/bench/run.sh "$PWD/bench/targets/hopgate.sh"
# Server in debug mode with its embedded database in $STATE/data; HTTP on 18090,
# DTLS on 18091/udp; one domain registered through the admin API; the client forwards
# to the bench origin. HOPGATE_ROOT points at the repo (default: two levels up).
HOPGATE_ROOT=${HOPGATE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PUBLIC_PORT=18090
SERVER_PORT=18090
PUBLIC_HOST=app.localhost
HOPGATE_ADMIN_KEY=bench-admin-key-0123456789
HOPGATE_ENGINE=${HOPGATE_ENGINE:-hopgate}
# HOPGATE_TRANSPORT=tcp: the tunnel over the TCP path (a WebSocket on the plain HTTP listener,
# docs/tcp-fallback.md) instead of DTLS over UDP.
HOPGATE_TRANSPORT=${HOPGATE_TRANSPORT:-dtls}
READY_TIMEOUT=60

setup() {
  rm -rf "$STATE/data"
  mkdir -p "$STATE/data"
}

server_cmd() {
  cd "$HOPGATE_ROOT" || exit 1
  HOP_SERVER_DEBUG=true HOP_SERVER_DOMAIN=localhost \
    HOP_SERVER_HTTP_LISTEN=127.0.0.1:18090 HOP_SERVER_DTLS_LISTEN=127.0.0.1:18091 \
    HOP_ADMIN_API_KEY=$HOPGATE_ADMIN_KEY HOP_DATA_DIR="$STATE/data" HOP_LOG_LEVEL=warn \
    exec deno run --allow-net --allow-read --allow-write="$STATE/data" --allow-env \
    --deny-env='HOP_CLIENT_*,AWS_*,AZURE_*,GOOGLE_*,GCP_*,GITHUB_*,GH_*,NPM_*,NODE_AUTH_TOKEN,DOCKER_*,SSH_*' \
    --allow-sys=hostname server/main.ts
}

client_cmd() {
  cd "$HOPGATE_ROOT" || exit 1
  local key
  key=$(curl -s -H 'Host: localhost' -H "Authorization: Bearer $HOPGATE_ADMIN_KEY" \
    -d "{\"domain\":\"$PUBLIC_HOST\",\"memo\":\"bench\"}" \
    http://127.0.0.1:18090/api/v1/admin/domains/register | sed -nE 's/.*"client_api_key":"([^"]+)".*/\1/p')
  [ -n "$key" ] || { echo "could not register $PUBLIC_HOST" >&2; exit 1; }
  exec deno run --allow-net --allow-read --allow-env client/main.ts \
    --server-addr 127.0.0.1:18091 --domain "$PUBLIC_HOST" --api-key "$key" \
    --local-target "127.0.0.1:$ORIGIN_PORT" --dtls-engine "$HOPGATE_ENGINE" \
    --transport "$HOPGATE_TRANSPORT" --server-tcp-addr http://127.0.0.1:18090 --server-name localhost
}
