#!/usr/bin/env bash
# wan_fairness.sh PROFILE [SECONDS]: a HopGate download and a plain TCP download (cubic, or
# CC=bbr) through the same emulated bottleneck at the same time, each alone first, on the WAN lab
# of ../shared/wan (README there; needs root and `../shared/wan/net.sh up`). Both downloads come
# from the origin in wan-cli to wan-srv, so they share the emulator's wan-cli -> wan-srv queue.
# Prints Mbit/s for: HopGate alone, TCP alone, and both at once (each flow's share).
# Stops every process it started (by PID) and the emulator.
set -u
PROFILE=${1:?usage: wan_fairness.sh PROFILE [SECONDS]}
SECS=${2:-20}
CC=${CC:-cubic}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LAB=${WAN_LAB:-$ROOT/../shared/wan}
W=${WAN_STATE:-/tmp/hopgate-wan}
OUT=$W/state/fairness-$PROFILE; rm -rf "$OUT"; mkdir -p "$OUT" "$W"
SRV="ip netns exec wan-srv"; CLI="ip netns exec wan-cli"
ADMIN=bench-admin-key-0123456789
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do pkill -9 -P "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  "$LAB/net.sh" emu-stop >/dev/null 2>&1
}
trap stop_all EXIT
trap 'exit 1' INT TERM

cp "$LAB/origin.js" "$W/origin.js"
[ -d "$W/node_modules/ws" ] || (cd "$W" && npm install --no-save --silent ws@8 >/dev/null 2>&1)
"$LAB/net.sh" emu "$PROFILE" >"$OUT/emu.start" 2>&1 || { echo "emulator did not start" >&2; exit 1; }
for ns in wan-srv wan-cli; do ip netns exec $ns sysctl -qw net.ipv4.tcp_congestion_control="$CC"; done
$CLI env ORIGIN_HOST=0.0.0.0 node "$W/origin.js" 18000 >"$OUT/origin.log" 2>&1 & PIDS+=($!)
TREE=$W/fair-tree
mkdir -p "$TREE" && rsync -a --delete --exclude /data --exclude /.git "$ROOT/" "$TREE/" && rm -rf "$TREE/data"
(cd "$TREE" && exec $SRV env HOP_SERVER_HTTP_LISTEN=10.200.0.1:28180 HOP_SERVER_HTTPS_LISTEN=10.200.0.1:28543 \
  HOP_SERVER_DTLS_LISTEN=10.200.0.1:28544 HOP_SERVER_DOMAIN=gate.localhost HOP_ADMIN_API_KEY=$ADMIN \
  HOP_SERVER_DEBUG=true HOP_LOG_LEVEL=warn deno task server) >"$OUT/server.log" 2>&1 & PIDS+=($!)
end=$((SECONDS + 60))
until $SRV curl -s -m 2 -o /dev/null -H 'Host: gate.localhost' http://10.200.0.1:28180/healthz; do
  [ $SECONDS -ge $end ] && { echo "server not up" >&2; exit 1; }; sleep 0.5
done
KEY=$($SRV curl -s -m 10 -H 'Host: gate.localhost' -H "Authorization: Bearer $ADMIN" \
  --data '{"domain":"bench.localhost"}' http://10.200.0.1:28180/api/v1/admin/domains/register |
  sed -nE 's/.*"client_api_key":"([^"]+)".*/\1/p')
(cd "$TREE" && exec $CLI env HOP_CLIENT_API_KEY="$KEY" deno task client --server-addr 10.200.0.1:28544 \
  --domain bench.localhost --local-target 127.0.0.1:18000) >"$OUT/client.log" 2>&1 & PIDS+=($!)
end=$((SECONDS + 60))
until [ "$($SRV curl -s -m 3 -H 'Host: bench.localhost' http://10.200.0.1:28180/small)" = "Hello, world!" ]; do
  [ $SECONDS -ge $end ] && { echo "tunnel not up" >&2; exit 1; }; sleep 0.5
done

BIG=$((4 * 1024 * 1024 * 1024))
# Bytes a download moves in SECS seconds (curl stops it at -m), as Mbit/s.
hopgate() { $SRV curl -s -o /dev/null -m "$SECS" -w '%{size_download}' -H 'Host: bench.localhost' \
  "http://10.200.0.1:28180/bytes/$BIG"; }
tcp() { $SRV curl -s -o /dev/null -m "$SECS" -w '%{size_download}' "http://10.200.0.2:18000/bytes/$BIG"; }
mbit() { awk -v b="$1" -v s="$SECS" 'BEGIN { printf "%.1f", b * 8 / s / 1e6 }'; }
# Warm the tunnel (fresh session), then each alone, then both together.
hopgate >/dev/null
a=$(hopgate); b=$(tcp)
hopgate >"$OUT/both_hopgate" & h=$!
tcp >"$OUT/both_tcp" & t=$!
wait $h $t
ch=$(cat "$OUT/both_hopgate"); ct=$(cat "$OUT/both_tcp")
echo "$PROFILE ($CC TCP), ${SECS} s each: HopGate alone $(mbit "$a") Mbit/s, TCP alone $(mbit "$b") Mbit/s;" \
  "together: HopGate $(mbit "$ch"), TCP $(mbit "$ct") Mbit/s"
