#!/usr/bin/env bash
# The DNS benchmark (root): netsvc-dnsd against dnsmasq and aardvark-dns
# (podman's resolver), all three serving the same names on the same node,
# asked by dnsperf from the same container of the network over the same bridge.
#
# The names are real: each is a CNI ADD of the chain bridge + host-local +
# netsvc-dns (run by `netsvc exec` in a throwaway node namespace), so
# netsvc-dnsd serves what its plugin recorded. dnsmasq gets the same
# name → address pairs as a hosts file, aardvark-dns as its network config.
#
#   netsvc-dnsd   gateway:53     (the plugin's default: listen = gateway)
#   dnsmasq       gateway:5300   (--no-resolv, --local=/domain/)
#   aardvark-dns  gateway:5301   (--filter-search-domain .domain: podman's dns.podman setup)
#
# Two runs per server, each from inside the client container:
#   throughput  dnsperf unlimited (-c clients, -q outstanding): QPS, mean
#               latency, and the server's CPU time (user + system) per answer
#   latency     dnsperf -v at a fixed rate every server sustains: mean, p50, p99
# The servers take turns, BENCH_ROUNDS times; each figure is the median of its
# rounds (so one column's median may come from another round than the next).
# On a shared machine QPS moves a lot between runs: compare within one run,
# and CPU per answer is the steadiest figure.
# Figures are printed, never asserted. Everything made here (namespaces,
# daemons, temp dirs) is removed on exit, also on failure or Ctrl-C.
#
# Knobs (environment):
#   BENCH_NAMES=1000       names (containers) on the network, at most 1000
#   BENCH_SECONDS=20       length of each dnsperf run
#   BENCH_CLIENTS=8        dnsperf -c (client sockets)
#   BENCH_OUTSTANDING=100  dnsperf -q (queries in flight)
#   BENCH_RATE=2000        dnsperf -Q of the fixed-rate latency run (0: skip it)
#   BENCH_ROUNDS=3         rounds of the three servers
#   BENCH_KEEP_LOG=FILE    keep dnsperf's own reports there
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NAMES=${BENCH_NAMES:-1000}
SECONDS_PER_RUN=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-8}
OUTSTANDING=${BENCH_OUTSTANDING:-100}
RATE=${BENCH_RATE:-2000}
ROUNDS=${BENCH_ROUNDS:-3}

NET=nsbench
DOMAIN=bench.internal
SUBNET=10.247.0.0/20
GW=10.247.0.1
BRIDGE=br-nsbench
PORT_NETSVC=53
PORT_DNSMASQ=5300
PORT_AARDVARK=5301
AARDVARK=/usr/lib/podman/aardvark-dns

TAG="nsb$$"
NODE="$TAG-node"     # the node: bridge, the three servers, the plugins run here
CLIENT="$TAG-client" # the container dnsperf runs in
HOLDER="$TAG-names"  # the other containers' interfaces (one namespace, name<i> on e<i>)
WORK=""
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    echo "bench-dns: $*" >&2
    exit 1
}

# --- setup of the machine ----------------------------------------------------

PACKAGES=(
    dnsperf
    dnsmasq-base
    aardvark-dns # /usr/lib/podman/aardvark-dns
    dnsutils     # dig: every server is checked before it is measured
    iproute2
    containernetworking-plugins # bridge and host-local in /usr/lib/cni
)

install_missing_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
    step "cargo build --release -p netsvc-dns -p netsvc-composer --bins"
    cargo build --release -p netsvc-dns -p netsvc-composer --bins
    [[ -x $RELEASE/netsvc && -x $RELEASE/netsvc-dns && -x $RELEASE/netsvc-dnsd ]] ||
        die "binaries not found in $RELEASE"
}

# --- cleanup -----------------------------------------------------------------

# Kills the process whose pid `file` holds, if it still runs.
kill_pidfile() {
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(tr -dc '0-9' <"$file")
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    set +e
    if [[ -n $WORK ]]; then
        kill_pidfile "$WORK/state/dnsd/pid"
        kill_pidfile "$WORK/dnsmasq.pid"
        kill_pidfile "$WORK/aardvark/aardvark.pid"
    fi
    # Deleting the namespaces takes the bridge and every veth with them.
    local ns
    for ns in "$CLIENT" "$HOLDER" "$NODE"; do
        ip netns del "$ns" 2>/dev/null
    done
    [[ -n $WORK ]] && rm -rf "$WORK"
}

# --- the network and its names -----------------------------------------------

make_namespaces() {
    step "namespaces $NODE, $CLIENT, $HOLDER"
    local ns
    for ns in "$NODE" "$CLIENT" "$HOLDER"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
}

write_conflist() {
    cat >"$WORK/$NET.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "$NET", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$WORK/ipam",
            "ranges": [[{"subnet": "$SUBNET", "gateway": "$GW"}]]}},
  {"type": "netsvc-dns", "domain": "$DOMAIN", "listen": "gateway",
   "port": $PORT_NETSVC, "upstreams": [], "ttl": 5}]}
EOF
}

# ADD one attachment through the real chain; prints its IPv4 address.
cni_add() {
    local netns=$1 id=$2 ifname=$3 name=$4 out
    out=$(NETSVC_STATE_DIR="$WORK/state" ip netns exec "$NODE" \
        "$RELEASE/netsvc" exec add "$WORK/$NET.conflist" "/var/run/netns/$netns" \
        --container-id "$id" --ifname "$ifname" \
        --args "IgnoreUnknown=1;NETSVC_NAME=$name" \
        --cni-path "$RELEASE:/usr/lib/cni" --cache-dir "$WORK/cni") ||
        die "ADD $name failed: $out"
    grep -oE '"address": *"[0-9.]+/' <<<"$out" | head -n1 | grep -oE '[0-9.]+[0-9]'
}

# The client container, then NAMES more, each in netsvc's graph. Writes
# $WORK/names (name ip per line, the client first).
add_names() {
    step "ADD client + $NAMES names (bridge + host-local + netsvc-dns)"
    local start=$SECONDS i ip
    CLIENT_IP=$(cni_add "$CLIENT" client eth0 client)
    echo "client $CLIENT_IP" >"$WORK/names"
    for ((i = 1; i <= NAMES; i++)); do
        ip=$(cni_add "$HOLDER" "name$i" "e$i" "name$i")
        echo "name$i $ip" >>"$WORK/names"
        ((i % 100 == 0)) && echo "  $i names ($((SECONDS - start)) s)" >&2
    done
    echo "  $((NAMES + 1)) attachments in $((SECONDS - start)) s; client is $CLIENT_IP" >&2
}

# --- the other two servers ---------------------------------------------------

start_dnsmasq() {
    step "dnsmasq on $GW:$PORT_DNSMASQ"
    awk -v d="$DOMAIN" '{print $2, $1 "." d, $1}' "$WORK/names" >"$WORK/hosts"
    ip netns exec "$NODE" dnsmasq --conf-file=/dev/null --no-hosts --addn-hosts="$WORK/hosts" \
        --no-resolv --local="/$DOMAIN/" --domain="$DOMAIN" --local-ttl=5 \
        --listen-address="$GW" --bind-interfaces --port="$PORT_DNSMASQ" \
        --pid-file="$WORK/dnsmasq.pid" --user=root --group=root
}

# aardvark-dns's config: a directory with one file per network, the first line
# its listen address(es), then `id ipv4 ipv6 name[,alias]` per container.
start_aardvark() {
    step "aardvark-dns on $GW:$PORT_AARDVARK"
    mkdir -p "$WORK/aardvark"
    {
        echo "$GW"
        awk '{print $1 "-id", $2, "", $1}' "$WORK/names"
    } >"$WORK/aardvark/$NET"
    # `run` forks; the parent returns once the child serves (pid in aardvark.pid).
    ip netns exec "$NODE" "$AARDVARK" --config "$WORK/aardvark" --port "$PORT_AARDVARK" \
        --filter-search-domain ".$DOMAIN" run 2>/dev/null
}

# --- measuring ---------------------------------------------------------------

SERVERS=(netsvc-dnsd dnsmasq aardvark-dns)
declare -A PORT=([netsvc-dnsd]=$PORT_NETSVC [dnsmasq]=$PORT_DNSMASQ [aardvark-dns]=$PORT_AARDVARK)

server_pid() {
    case $1 in
    netsvc-dnsd) tr -dc '0-9' <"$WORK/state/dnsd/pid" ;;
    dnsmasq) tr -dc '0-9' <"$WORK/dnsmasq.pid" ;;
    aardvark-dns) tr -dc '0-9' <"$WORK/aardvark/aardvark.pid" ;;
    esac
}

# CPU time (user + system, every thread) a process has used, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# Every server answers a few names with the address the chain gave them.
check_answers() {
    step "checking every server's answers from $CLIENT"
    local server name ip got
    for server in "${SERVERS[@]}"; do
        while read -r name ip; do
            got=$(ip netns exec "$CLIENT" dig +short +time=2 +tries=2 \
                -p "${PORT[$server]}" "@$GW" "$name.$DOMAIN" A)
            [[ $got == "$ip" ]] || die "$server answers $name.$DOMAIN with '$got', not $ip"
        done < <(sed -n "1p;2p;$((NAMES / 2 + 1))p;\$p" "$WORK/names")
    done
}

write_queries() {
    awk -v d="$DOMAIN" 'NR > 1 {print $1 "." d, "A"}' "$WORK/names" >"$WORK/queries"
}

# "pct p50_ms p99_ms" of the latencies (seconds, sorted) on stdin; nothing when none.
percentiles() {
    awk '{ l[NR] = $1 }
        END {
            if (NR == 0) exit
            p99 = int(NR * 0.99)
            if (p99 < 1) p99 = 1
            printf "pct %.3f %.3f\n", 1000 * l[int((NR + 1) / 2)], 1000 * l[p99]
        }'
}

# One dnsperf run from the client container; extra arguments go to dnsperf
# (with -v, every answer's latency is read too). Prints
# "qps mean_ms lost_pct noerror_pct cpu_us_per_query p50_ms p99_ms"
# (p50/p99 "-" without -v).
dnsperf_run() {
    local server=$1 pid before after out
    shift
    pid=$(server_pid "$server")
    before=$(cpu_ticks "$pid")
    out=$(ip netns exec "$CLIENT" dnsperf -s "$GW" -p "${PORT[$server]}" -d "$WORK/queries" \
        -l "$SECONDS_PER_RUN" "$@" 2>&1) || die "dnsperf against $server failed: $(tail -5 <<<"$out")"
    after=$(cpu_ticks "$pid")
    grep -v '^> ' <<<"$out" >>"$WORK/dnsperf.log"
    {
        echo "cpu $((after - before)) $(getconf CLK_TCK)"
        grep '^> ' <<<"$out" | awk '{print $NF}' | sort -g | percentiles
        echo "$out"
    } | awk '
        /^cpu /                { ticks = $2; hz = $3 }
        /^pct /                { p50 = $2; p99 = $3 }
        /Queries sent:/        { sent = $3 }
        /Queries completed:/   { done = $3 }
        /Queries lost:/        { lost = $3 }
        /Response codes:/      { noerr = ($3 == "NOERROR") ? $4 : 0 }
        /Queries per second:/  { qps = $4 }
        /Average Latency/      { lat = $4 * 1000 }
        END {
            printf "%.0f %.3f %.2f %.1f %.1f %s %s\n", qps, lat, sent ? 100 * lost / sent : 0,
                sent ? 100 * noerr / sent : 0, done ? ticks * 1e6 / hz / done : 0,
                p50 == "" ? "-" : p50, p99 == "" ? "-" : p99
        }'
}

# Runs every server ROUNDS times, interleaved; writes "server mode figures..."
# lines to $WORK/results.
measure() {
    local round server figures
    : >"$WORK/results"
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    for ((round = 1; round <= ROUNDS; round++)); do
        for server in "${SERVERS[@]}"; do
            step "round $round/$ROUNDS: $server throughput (-c $CLIENTS -q $OUTSTANDING, ${SECONDS_PER_RUN}s)"
            figures=$(dnsperf_run "$server" -c "$CLIENTS" -q "$OUTSTANDING")
            echo "$server max $figures" | tee -a "$WORK/results" >&2
            ((RATE > 0)) || continue
            step "round $round/$ROUNDS: $server latency at $RATE qps (${SECONDS_PER_RUN}s)"
            figures=$(dnsperf_run "$server" -c "$CLIENTS" -Q "$RATE" -v)
            echo "$server rate $figures" | tee -a "$WORK/results" >&2
        done
    done
    LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
}

# The median of each figure over the rounds, one line per server:
# "server qps mean_ms lost noerror cpu_us p50 p99".
medians() {
    awk -v mode="$1" '
        function median(list,   n, a, i, j, t) {
            n = split(list, a, " ")
            if (a[1] == "-") return "-"
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $2 == mode { for (f = 3; f <= 9; f++) v[$1, f] = v[$1, f] " " $f; seen[$1] = 1 }
        END {
            split("netsvc-dnsd dnsmasq aardvark-dns", order, " ")
            for (i = 1; i <= 3; i++) {
                s = order[i]
                if (!(s in seen)) continue
                line = s
                for (f = 3; f <= 9; f++) line = line " " median(v[s, f])
                print line
            }
        }
    ' "$WORK/results"
}

# netsvc-dnsd's figure over another server's (from `medians` lines on stdin).
ratios() {
    awk -v cols="$1" '
        { for (f = 2; f <= NF; f++) m[$1, f] = $f; names[NR] = $1 }
        END {
            n = split(cols, c, ",")
            for (i = 2; i <= NR; i++) {
                line = sprintf("netsvc/%-13s", names[i])
                for (k = 1; k <= n; k++) {
                    split(c[k], kv, ":")
                    a = m["netsvc-dnsd", kv[2]]; b = m[names[i], kv[2]]
                    line = line sprintf("  %s ", kv[1]) (b + 0 > 0 && a != "-" ? sprintf("x%.2f", a / b) : "n/a")
                }
                print line
            }
        }'
}

throughput_table() {
    echo "throughput (dnsperf -c $CLIENTS -q $OUTSTANDING, unlimited rate; CPU = server's user+system per answer)"
    printf '%-20s %9s %16s %14s %7s %10s\n' server QPS "mean latency ms" "CPU us/query" "lost %" "NOERROR %"
    medians max | awk '{printf "%-20s %9.0f %16.3f %14.1f %7.2f %10.1f\n", $1, $2, $3, $6, $4, $5}'
    medians max | ratios "QPS:2,mean latency:3,CPU/query:6"
}

latency_table() {
    echo "latency at a fixed rate (dnsperf -c $CLIENTS -Q $RATE)"
    printf '%-20s %9s %16s %8s %8s %7s\n' server QPS "mean latency ms" "p50 ms" "p99 ms" "lost %"
    medians rate | awk '{printf "%-20s %9.0f %16.3f %8s %8s %7.2f\n", $1, $2, $3, $7, $8, $4}'
    medians rate | ratios "mean latency:3,p50:7,p99:8"
}

report() {
    echo
    echo "DNS benchmark: $((NAMES + 1)) names under $DOMAIN; A queries for $NAMES of them, sent from"
    echo "one container over bridge $BRIDGE to $GW; ${SECONDS_PER_RUN}s per dnsperf run; median of $ROUNDS"
    echo "interleaved round(s); $(nproc) cores, load average $LOAD_BEFORE before, $LOAD_AFTER after"
    echo
    throughput_table
    if ((RATE > 0)); then
        echo
        latency_table
    fi
}

# The medians as JSON in $NETSVC_BENCH_OUT/dns.json, for bench/run's report.
record() {
    [[ -n ${NETSVC_BENCH_OUT:-} ]] || return 0
    {
        echo '{"names": '"$((NAMES + 1))"', "seconds": '"$SECONDS_PER_RUN"', "rounds": '"$ROUNDS"', "rate": '"$RATE"','
        echo '"throughput": ['
        medians max | awk '{printf "%s{\"server\": \"%s\", \"qps\": %s, \"meanLatencyMs\": %s, \"cpuUsPerQuery\": %s, \"lostPercent\": %s}",
            (NR > 1 ? ",\n" : ""), $1, $2, $3, $6, $4}'
        echo '],'
        echo '"latency": ['
        medians rate | awk '{printf "%s{\"server\": \"%s\", \"meanLatencyMs\": %s, \"p50Ms\": %s, \"p99Ms\": %s}",
            (NR > 1 ? ",\n" : ""), $1, $3, ($7 == "-" ? "null" : $7), ($8 == "-" ? "null" : $8)}'
        echo ']}'
    } >"$NETSVC_BENCH_OUT/dns.json"
}

main() {
    ((EUID == 0)) || die "run as root (namespaces, packages)"
    ((NAMES >= 1 && NAMES <= 1000)) || die "BENCH_NAMES must be 1..1000 (one bridge takes 1024 ports)"
    install_missing_packages
    build
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$(mktemp -d /tmp/netsvc-bench-dns.XXXXXX)
    mkdir -p "$WORK/state"
    chmod 700 "$WORK/state"
    make_namespaces
    write_conflist
    add_names
    start_dnsmasq
    start_aardvark
    check_answers
    write_queries
    measure
    report
    record
    if [[ -n ${BENCH_KEEP_LOG:-} ]]; then
        cp "$WORK/dnsperf.log" "$BENCH_KEEP_LOG"
        echo "dnsperf's own reports: $BENCH_KEEP_LOG"
    fi
}

main "$@"
