#!/usr/bin/env bash
# Page load through the tunnel over HTTPS: HTTP/2 (before: the Deno.serve engine, a checkout of
# 47c54ef or later-but-pre-front main) against HTTP/1.1 (after: our own front, this tree).
#
# A "page" = GET /index.html (~4 KB, naming the sub-resources) and 60 sub-resources (40 x 2 KB
# "/s/N.css", 20 x 30 KB "/l/N.js"), all in ONE curl invocation (fresh connections: TCP + TLS
# handshakes are part of every load), the HTML first in the list:
#   h2:    curl --http2   --parallel --parallel-max 100  (curl waits for the first connection and
#          multiplexes everything on it: 1 connection)
#   h1.1:  curl --http1.1 --parallel --parallel-max 6    (at most 6 keep-alive connections)
# Time = wall clock around curl (first request to last byte, + curl's start-up, a few ms, same
# for both), median of LOADS (5) loads after one warm-up load; before/after loads alternate.
# Not a browser: curl sends all requests at once (the HTML is not a dependency), and with
# --http1.1 it opens all 6 connections at t=0, where a browser opens the extra ones after the
# HTML arrives (so h1.1 is favoured by up to ~2 RTT). The per-transfer lines (KEEP=1) show
# connect/TLS/first-byte times; the summary prints each side's TLS handshake time ("before",
# Deno.listenTls, took 2 RTT for TLS 1.3 on Deno 2.9.6, where the front takes 1: h2 pays it once).
# Paths: loopback (curl in the server's namespace), and 25 ms / 50 ms one-way delay (50 / 100 ms
# RTT), curl in a second namespace. The kernel has no sch_netem, so the delay comes from the
# userspace emulator of the WAN lab (/work/shared/wan/emu.c, compiled to $STATE/emu): delay
# only, no rate limit, no loss, between two tun devices.
#
#   netns hgpl-srv 10.200.0.1                            netns hgpl-cli 10.200.0.2
#    origin 127.0.0.1, HopGate server + client x2  <-tun-> emu <-tun->  curl
#
# Usage (root; needs deno, curl with HTTP/2, gcc, ip):
#   bench/page_load.sh [BASE_ROOT]      BASE_ROOT: the "before" checkout (default /tmp/base);
#                                       "after" is the tree this script lives in
#   env: LOADS=5  DELAYS="0 25 50" (one-way ms; 0 = loopback)  STATE=/tmp/hopgate-pageload
#        PORT_BASE=18300  AFTER_HTTP=2 (or 1.1)  KEEP=1 (keep $STATE/out: curl -w lines per transfer, server logs)
# Takes ~1 min (start-up ~15 s, then 36 loads). Removes its namespaces and tun devices at
# the end (also on Ctrl-C); stops only the processes it started, by PID.
set -u
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
AFTER=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(cd "${1:-/tmp/base}" && pwd) || exit 2
LOADS=${LOADS:-5}
# "after" offers h2 (the tree's H2Bridge, server/front/h2.ts); AFTER_HTTP=1.1: --http1.1 as before
AFTER_HTTP=${AFTER_HTTP:-2}
DELAYS=${DELAYS:-"0 25 50"}
STATE=${STATE:-/tmp/hopgate-pageload}
P=${PORT_BASE:-18300}
ORIGIN=$P
NS_S=hgpl-srv NS_C=hgpl-cli TUN_S=hgplA TUN_C=hgplB
IP_S=10.200.0.1 IP_C=10.200.0.2
NAME=app.localhost
ADMIN_KEY=pageload-admin-key-0123456789
SRV="ip netns exec $NS_S"
CLI="ip netns exec $NS_C"
OUT=$STATE/out
rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
EMU_PID=

stop_emu() {
  [ -n "$EMU_PID" ] || return 0
  kill "$EMU_PID" 2>/dev/null
  while kill -0 "$EMU_PID" 2>/dev/null; do sleep 0.05; done
  EMU_PID=
}
cleanup() {
  stop_emu
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
  sleep 2
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns del $NS_S 2>/dev/null
  ip netns del $NS_C 2>/dev/null
  ip link del $TUN_S 2>/dev/null
  ip link del $TUN_C 2>/dev/null
  [ "${KEEP:-}" = 1 ] && echo "raw output in $OUT" >&2 || rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- emulator and namespaces -------------------------------------------------------------------
EMU_SRC=/work/shared/wan/emu.c
[ -x "$STATE/emu" ] && [ "$STATE/emu" -nt "$EMU_SRC" ] || gcc -O2 -o "$STATE/emu" "$EMU_SRC" || exit 1
for ns in $NS_S $NS_C; do
  ip netns list | grep -qw "^$ns" && { echo "netns $ns exists (another run?)" >&2; exit 1; }
done
ip netns add $NS_S && ip netns add $NS_C || exit 1
ip -n $NS_S link set lo up
ip -n $NS_C link set lo up
ip tuntap add dev $TUN_S mode tun && ip tuntap add dev $TUN_C mode tun || exit 1
ip link set $TUN_S netns $NS_S
ip link set $TUN_C netns $NS_C
ip -n $NS_S addr add $IP_S/24 dev $TUN_S
ip -n $NS_C addr add $IP_C/24 dev $TUN_C
ip -n $NS_S link set $TUN_S mtu 1500 up
ip -n $NS_C link set $TUN_C mtu 1500 up
$SRV sysctl -qw net.ipv6.conf.$TUN_S.disable_ipv6=1
$CLI sysctl -qw net.ipv6.conf.$TUN_C.disable_ipv6=1
for ns in $NS_S $NS_C; do ip netns exec $ns sysctl -qw net.ipv4.tcp_no_metrics_save=1; done
start_emu() { # start_emu ONE_WAY_MS
  stop_emu
  "$STATE/emu" --a $NS_S:$TUN_S --b $NS_C:$TUN_C --delay-ms "$1" --rate-mbit 0 --loss 0 \
    >"$OUT/emu-$1.log" 2>&1 &
  EMU_PID=$!
  sleep 0.3
  kill -0 "$EMU_PID" 2>/dev/null || { cat "$OUT/emu-$1.log" >&2; exit 1; }
}

# --- origin: the page and its sub-resources ----------------------------------------------------
cat >"$OUT/origin.ts" <<EOT
const SMALL = 40, LARGE = 20;
const fill = (n: number, c: string) => new TextEncoder().encode(c.repeat(n));
const small = fill(2048, "a"), large = fill(30720, "b");
let html = "<!doctype html><html><head><title>page</title>\n";
for (let i = 0; i < SMALL; i++) html += \`<link rel="stylesheet" href="/s/\${i}.css">\n\`;
for (let i = 0; i < LARGE; i++) html += \`<script src="/l/\${i}.js"></script>\n\`;
html += "</head><body>" + "x".repeat(4096 - html.length - 20) + "</body></html>\n";
const page = new TextEncoder().encode(html);
Deno.serve({ hostname: "127.0.0.1", port: $ORIGIN, onListen() {} }, (req) => {
  const p = new URL(req.url).pathname;
  if (p === "/index.html") return new Response(page, { headers: { "content-type": "text/html" } });
  if (p.startsWith("/s/")) return new Response(small, { headers: { "content-type": "text/css" } });
  if (p.startsWith("/l/")) return new Response(large, { headers: { "content-type": "text/javascript" } });
  return new Response("Hello, world!");
});
EOT
$SRV deno run --allow-net "$OUT/origin.ts" >"$OUT/origin.log" 2>&1 &
PIDS+=($!)

# --- one HopGate server + client per tree, same scripts, only the root differs -----------------
declare -A HTTPS
start_hopgate() { # start_hopgate TAG ROOT PORT_OFFSET
  local tag=$1 root=$2 http=$((P + $3)) https=$((P + $3 + 1)) dtls=$((P + $3 + 2)) key
  [ -d "$root/node_modules" ] || (cd "$root" && deno install --frozen >/dev/null 2>&1)
  (cd "$root" && HOP_SERVER_DEBUG=true HOP_SERVER_DOMAIN=localhost HOP_SERVER_HTTP_LISTEN=127.0.0.1:$http \
    HOP_SERVER_HTTPS_LISTEN=$IP_S:$https HOP_SERVER_DTLS_LISTEN=127.0.0.1:$dtls \
    HOP_ADMIN_API_KEY=$ADMIN_KEY HOP_DATA_DIR="$OUT/data-$tag" HOP_LOG_LEVEL=warn \
    exec $SRV deno run --allow-all server/main.ts) >"$OUT/server-$tag.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 150); do $SRV curl -s -o /dev/null -H 'Host: localhost' "http://127.0.0.1:$http/healthz" && break; sleep 0.2; done
  key=$($SRV curl -s -H 'Host: localhost' -H "Authorization: Bearer $ADMIN_KEY" -d "{\"domain\":\"$NAME\"}" \
    "http://127.0.0.1:$http/api/v1/admin/domains/register" | sed -nE 's/.*"client_api_key":"([^"]+)".*/\1/p')
  [ -n "$key" ] || { echo "$tag: could not register $NAME (see $OUT/server-$tag.log)" >&2; exit 1; }
  (cd "$root" && exec $SRV deno run --allow-all client/main.ts --server-addr "127.0.0.1:$dtls" --domain $NAME \
    --api-key "$key" --local-target "127.0.0.1:$ORIGIN") >"$OUT/client-$tag.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 150); do
    [ "$($SRV curl -sk --resolve $NAME:$https:$IP_S "https://$NAME:$https/")" = "Hello, world!" ] && break
    sleep 0.2
  done
  [ "$($SRV curl -sk --resolve $NAME:$https:$IP_S "https://$NAME:$https/")" = "Hello, world!" ] ||
    { echo "$tag: tunnel not up over HTTPS (see $OUT/*-$tag.log)" >&2; exit 1; }
  HTTPS[$tag]=$https
}
start_hopgate before "$BEFORE" 10
start_hopgate after "$AFTER" 20

# --- the page load -----------------------------------------------------------------------------
URLS=()
url_list() { # url_list PORT
  URLS=("https://$NAME:$1/index.html")
  local i
  for i in $(seq 0 39); do URLS+=("https://$NAME:$1/s/$i.css"); done
  for i in $(seq 0 19); do URLS+=("https://$NAME:$1/l/$i.js"); done
}
W='%{http_code} %{http_version} %{num_connects} %{size_download} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}\n'
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# what a load looked like: protocol(s), connections, transfers OK, bytes, TLS handshake, HTML
describe() { awk '{v[$2]++; c+=$3; n++; if ($1 == 200) ok++; b+=$4}
  $3 == 1 {hs[++h] = ($6 - $5) * 1000} NR == 1 {html = $8 * 1000}
  END{for (k in v) vs=vs (vs ? "," : "") k; asort(hs)
    printf "HTTP %s, %d TCP connections, %d/%d OK, %d bytes, TLS handshake %.0f ms (median), HTML done %.0f ms",
      vs, c, ok, n, b, hs[int((h + 1) / 2)], html}' "$1"; }
load() { # load TAG NETNS-EXEC FILE -> prints wall ms; per-transfer -w lines in FILE
  local tag=$1 ns=$2 file=$3 port=${HTTPS[$1]} t0 t1 proto os=() u
  if [ "$tag" = before ] || [ "$AFTER_HTTP" = 2 ]; then proto=(--http2 --parallel --parallel-max 100); else proto=(--http1.1 --parallel --parallel-max 6); fi
  url_list "$port"
  for u in "${URLS[@]}"; do os+=(-o /dev/null "$u"); done
  t0=$(date +%s%N)
  $ns curl -sk "${proto[@]}" --resolve "$NAME:$port:$IP_S" -w "$W" "${os[@]}" >"$file" 2>"$file.err"
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

# TLS version and ALPN result, once per side (from curl -v)
for tag in before after; do
  port=${HTTPS[$tag]}
  if [ $tag = before ] || [ "$AFTER_HTTP" = 2 ]; then v=--http2; else v=--http1.1; fi
  $SRV curl -skv $v --resolve "$NAME:$port:$IP_S" -o /dev/null "https://$NAME:$port/index.html" 2>&1 |
    grep -E 'SSL connection using|ALPN: server' | sed "s/^/$tag: /" >&2
done
# what does a plain browser-like client get from "after" when it offers h2? (ALPN fallback)
$SRV curl -sk --http2 --resolve "$NAME:${HTTPS[after]}:$IP_S" -o /dev/null -w 'after, curl offering h2: HTTP %{http_version}\n' \
  "https://$NAME:${HTTPS[after]}/index.html" >&2

ROWS=() ROWS_RAW=() DETAILS=()
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for d in $DELAYS; do
  if [ "$d" = 0 ]; then ns=$SRV label=loopback; else start_emu "$d"; ns=$CLI label="$((2 * d)) ms RTT"; fi
  if [ "$d" != 0 ]; then # check the path RTT with one TCP connect
    rtt=$($ns curl -sk -o /dev/null -w '%{time_connect}' --resolve "$NAME:${HTTPS[after]}:$IP_S" "https://$NAME:${HTTPS[after]}/")
    echo "$label: TCP connect $(awk -v t="$rtt" 'BEGIN{printf "%.1f", t * 1000}') ms" >&2
  fi
  for tag in before after; do load $tag "$ns" "$OUT/warm-$d-$tag.txt" >/dev/null; done
  declare -a T_before=() T_after=()
  for i in $(seq "$LOADS"); do
    for tag in before after; do
      f="$OUT/load-$d-$tag-$i.txt"
      ms=$(load $tag "$ns" "$f")
      if [ $tag = before ]; then T_before+=("$ms"); else T_after+=("$ms"); fi
      echo "$label $tag #$i: $ms ms; $(describe "$f")" >&2
    done
  done
  b=$(median "${T_before[@]}") a=$(median "${T_after[@]}")
  ROWS+=("| $label | $b | $a | $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a / b}') |")
  ROWS_RAW+=("$label: before ${T_before[*]} / after ${T_after[*]}")
  for tag in before after; do DETAILS+=("$label, $tag (last load): $(describe "$OUT/load-$d-$tag-$LOADS.txt")"); done
  stop_emu
done

echo
echo "Page load (HTML + 60 sub-resources, 684 KiB) through the tunnel over HTTPS, median of $LOADS, ms"
echo
echo "| path | before h2 ms | after $([ "$AFTER_HTTP" = 2 ] && echo h2 || echo h1.1) ms | ratio after/before |"
echo "|---|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
printf 'all loads, ms: %s\n' "${ROWS_RAW[@]}"
printf -- '- %s\n' "${DETAILS[@]}"
echo "load average before the loads: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
