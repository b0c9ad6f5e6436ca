#!/usr/bin/env bash
# Quick tunnel check, for before/after comparisons while optimizing (the full comparison with
# direct and ssh -R is the shared harness with bench/targets/hopgate.sh). Starts an origin, the
# server (debug, embedded database in a temp dir) and the client as processes on 127.0.0.1,
# runs wrk -c50 (8 s) and -c1 (4 s) on a 13-byte response, a 50 MiB echo upload and a 100 MiB
# download with curl,
# prints the figures and the RSS of both processes, and stops everything it started.
# ONLY=c50, c1, echo or get runs that phase alone (e.g. to profile it); ONLY=c1paced runs one
# request every 25 ms (hey -q 40; RATE=n for n a second), as c1 does over a 20 ms path, and
# counts CPU and minor page faults per request; REPEAT=n runs the c50, echo
# and get phases n times in a row (a Deno process warms up over tens of seconds). PROFILE=1 adds
# --cpu-prof (profiles under $OUT/server, $OUT/client; summarize with
# `deno run --allow-read bench/cpuprofile_top.ts FILE`). MAX_DATAGRAM=1215 caps the tunnel's
# datagrams as on a WAN path (loopback's default carries whole 16 KiB records) so the per-packet
# CPU shows; the server keeps whole records for a loopback peer whatever its ceiling, so give the
# tunnel a local address off 127/8 too, e.g. as root `ip link add hgv0 type veth peer name hgv1;
# ip addr add 10.98.0.1/32 dev hgv0; ip link set hgv0 up; ip link set hgv1 up`, then
# TUNNEL_HOST=10.98.0.1 (the kernel still routes it through lo). LOG_LEVEL=info logs each
# request as a server does by default (the bench runs it at warn); V8FLAGS=... passes
# --v8-flags to both tunnel processes. Needs wrk and curl (c1paced: hey).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/hopgate-quick.XXXXXX)}
mkdir -p "$OUT"
P=${PORT_BASE:-18100}
ORIGIN=$P HTTP=$((P + 1)) DTLS=$((P + 2)) TH=${TUNNEL_HOST:-127.0.0.1}
KEY_ADMIN=quick-admin-key-0123456789
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done; sleep 2; for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT
prof() { [ "${PROFILE:-}" = 1 ] && echo "--cpu-prof --cpu-prof-dir=$OUT/$1"; }

cat > "$OUT/origin.ts" <<EOT
const chunk = new Uint8Array(65536).map((_, i) => i * 31);
function bytes(n: number) {
  let left = n;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (left <= 0) return c.close();
      const k = Math.min(left, chunk.length);
      left -= k;
      c.enqueue(chunk.slice(0, k));
    },
  });
}
Deno.serve({ hostname: "127.0.0.1", port: $ORIGIN, onListen() {} }, (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/echo") return new Response(req.body);
  if (path === "/bytes") return new Response(bytes(104857600));
  return new Response("Hello, world!");
});
EOT
deno run --allow-net "$OUT/origin.ts" & PIDS+=($!)
cd "$ROOT" || exit 1
HOP_SERVER_DEBUG=true HOP_SERVER_DOMAIN=localhost HOP_SERVER_HTTP_LISTEN=127.0.0.1:$HTTP \
  HOP_SERVER_HTTPS_LISTEN=127.0.0.1:0 HOP_SERVER_DTLS_LISTEN=$TH:$DTLS \
  HOP_ADMIN_API_KEY=$KEY_ADMIN HOP_DATA_DIR="$OUT/data" HOP_LOG_LEVEL=${LOG_LEVEL:-warn} \
  ${MAX_DATAGRAM:+env HOP_TUNNEL_MAX_DATAGRAM_BYTES=$MAX_DATAGRAM} \
  deno run $(prof server) ${V8FLAGS:+--v8-flags=$V8FLAGS} --allow-all server/main.ts >"$OUT/server.log" 2>&1 & PIDS+=($!); S=$!
for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: localhost' "http://127.0.0.1:$HTTP/healthz" && break; sleep 0.2; done
KEY=$(curl -s -H 'Host: localhost' -H "Authorization: Bearer $KEY_ADMIN" -d '{"domain":"app.localhost"}' \
  "http://127.0.0.1:$HTTP/api/v1/admin/domains/register" | sed -nE 's/.*"client_api_key":"([^"]+)".*/\1/p')
deno run $(prof client) ${V8FLAGS:+--v8-flags=$V8FLAGS} --allow-all client/main.ts --server-addr "$TH:$DTLS" --domain app.localhost \
  --api-key "$KEY" --local-target "127.0.0.1:$ORIGIN" \
  ${MAX_DATAGRAM:+--max-datagram-bytes "$MAX_DATAGRAM"} >"$OUT/client.log" 2>&1 & PIDS+=($!); C=$!
for _ in $(seq 100); do [ "$(curl -s -H 'Host: app.localhost' "http://127.0.0.1:$HTTP/")" = "Hello, world!" ] && break; sleep 0.2; done
H=(-H 'Host: app.localhost')
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
flt() { awk '{print $10}' "/proc/$1/stat"; } # minor page faults
pkts() { curl -s -H 'Host: localhost' "http://127.0.0.1:$HTTP/metrics" | awk '/^hopgate_tunnel_packets_total/{n+=$2} END{print n+0}'; }
if [ "${ONLY:-c50}" = c50 ]; then
for run in $(seq "${REPEAT:-1}"); do
s0=$(cpu $S) c0=$(cpu $C) p0=$(pkts)
wrk -t2 -c50 -d8s --latency "${H[@]}" "http://127.0.0.1:$HTTP/" >"$OUT/wrk50"
read -r n r a b < <(awk '/requests in/{n=$1} /Requests\/sec/{r=$2} /^ +50%/{a=$2} /^ +99%/{b=$2} END{print n, r, a, b}' "$OUT/wrk50")
hz=$(getconf CLK_TCK)
echo "c50: $r req/s p50 $a p99 $b; CPU µs/req server $((($(cpu $S) - s0) * 1000000 / hz / n)) client $((($(cpu $C) - c0) * 1000000 / hz / n)); datagrams per 1000 requests $((($(pkts) - p0) * 1000 / n))"
done
fi
if [ "${ONLY:-c1}" = c1 ]; then
s0=$(cpu $S) c0=$(cpu $C)
wrk -t1 -c1 -d4s --latency "${H[@]}" "http://127.0.0.1:$HTTP/" >"$OUT/wrk1"
read -r n r a < <(awk '/requests in/{n=$1} /Requests\/sec/{r=$2} /^ +50%/{a=$2} END{print n, r, a}' "$OUT/wrk1")
hz=$(getconf CLK_TCK)
echo "c1:  $r req/s p50 $a; CPU µs/req server $((($(cpu $S) - s0) * 1000000 / hz / n)) client $((($(cpu $C) - c0) * 1000000 / hz / n))"
fi
if [ "${ONLY:-}" = c1paced ]; then
# One request every 25 ms (RATE=40 a second), as c1 over a 20 ms path: each finds both processes idle.
s0=$(cpu $S) c0=$(cpu $C) f0=$(flt $S) g0=$(flt $C)
hey -c 1 -q "${RATE:-40}" -z 8s -host app.localhost "http://127.0.0.1:$HTTP/" >"$OUT/hey1"
n=$(awk '/\[200\]/{print $2}' "$OUT/hey1") a=$(awk '/ 50% in /{print $3 * 1000}' "$OUT/hey1")
hz=$(getconf CLK_TCK)
echo "c1 paced (${RATE:-40}/s): $n requests, p50 $a ms; CPU µs/req server $((($(cpu $S) - s0) * 1000000 / hz / n)) client $((($(cpu $C) - c0) * 1000000 / hz / n)); minor faults/req server $((($(flt $S) - f0) / n)) client $((($(flt $C) - g0) / n))"
fi
if [ "${ONLY:-echo}" = echo ]; then
head -c 52428800 /dev/urandom >"$OUT/50m.bin"
for run in $(seq "${REPEAT:-1}"); do
s0=$(cpu $S) c0=$(cpu $C)
t=$(curl -s -o /dev/null -w '%{time_total}' "${H[@]}" -H 'Expect:' --data-binary @"$OUT/50m.bin" "http://127.0.0.1:$HTTP/echo")
hz=$(getconf CLK_TCK)
echo "echo 50 MiB: $t s; CPU ms/MiB server $((($(cpu $S) - s0) * 1000 / hz / 50)) client $((($(cpu $C) - c0) * 1000 / hz / 50))"
done
fi
if [ "${ONLY:-get}" = get ]; then
for run in $(seq "${REPEAT:-1}"); do
s0=$(cpu $S) c0=$(cpu $C)
t=$(curl -s -o /dev/null -w '%{time_total}' "${H[@]}" "http://127.0.0.1:$HTTP/bytes")
hz=$(getconf CLK_TCK)
echo "GET 100 MiB: $t s; CPU ms/MiB server $((($(cpu $S) - s0) * 1000 / hz / 100)) client $((($(cpu $C) - c0) * 1000 / hz / 100))"
done
fi
echo "tunnel: $(curl -s -H 'Host: localhost' "http://127.0.0.1:$HTTP/metrics" | awk '/^hopgate_tunnel_(packets_lost|bytes_retransmitted|bytes|packets)_total|^hopgate_tunnel_streams_open/{printf "%s ", $0} /^hopgate_dtls_dropped/ && $2 != 0 {printf "%s ", $0}')"
echo "RSS MB: server $(($(awk '/VmRSS/{print $2}' /proc/$S/status) / 1024)) client $(($(awk '/VmRSS/{print $2}' /proc/$C/status) / 1024))"
echo "output in $OUT"
