#!/bin/bash
# Benchmark dotproxyd against other DNS-over-TLS forwarders: unbound (as a
# forwarder), stubby and dnsdist.  Every forwarder runs on loopback, on the
# same machine, pointed at the same unbound DNS-over-TLS upstream with the
# same throwaway CA, and is measured with dnsperf in the same run.  The
# results are printed as one table, followed by the ratios dotproxyd/peer.
# See tests/bench/README.md for what is measured and how to read it.
#
# Environment:
#   DOTPROXYD          binary under test (default: build/dotproxyd)
#   BENCH_SECONDS      length of each dnsperf run (default 10)
#   BENCH_CLIENTS      dnsperf clients, -c (default 20)
#   BENCH_OUTSTANDING  dnsperf outstanding queries, -q (default 500)
#   BENCH_RATE         query rate of the latency run, -Q (default 1000)
#   BENCH_HIT_NAMES    distinct names of the cache-hit run (default 1000)
#   BENCH_PEERS        forwarders to measure (default
#                      "dotproxyd unbound stubby dnsdist")
#   BENCH_UPSTREAM_THREADS  threads of the upstream unbound (default 2)
#   BENCH_UNBOUND_THREADS   num-threads of the forwarding unbound, one
#                      comparison run each (default "1 2")
#   BENCH_DNSDIST_INFLIGHT  maxInFlight of dnsdist's TLS backend, one
#                      comparison run each, 0 for none (default "0 100")
#   BENCH_TLS_CONNS    dotproxyd `tls connections` (default 4)
#   BENCH_DOTPROXYD_CONF  more lines for dotproxyd's configuration
#   BENCH_INSTALL      0 to never install missing packages (default 1)
#   BENCH_KEEP         1 to keep the temporary directory (default 0)
#   BENCH_IDLE_SECONDS seconds without queries before memory is read a
#                      second time (default 20)
#   BENCH_CA_SYSTEM    0 to give the forwarders the throwaway CA alone,
#                      not the system's CA bundle with it (default 1)
#   BENCH_SOAK_SECONDS length of the dotproxyd soak run, 0 to skip it
#                      (default 60)
#   BENCH_SOAK_RATE    its steady query rate (default 2000)
#   BENCH_SECTIONS     what to run, of "compare soak faults replay
#                      profile" (the default): the comparison table, the
#                      dotproxyd soak run, the fault runs, the replay of
#                      Zipf-distributed names through a slow upstream, the
#                      profile of cache hits
#   BENCH_FAULT_RATE, BENCH_FAULT_SECONDS  query rate and length of the
#                      silent-first fault run (default 300, 10)
#   BENCH_FAULT_BURSTS, BENCH_FAULT_BURST, BENCH_FAULT_PAUSE  bursts of
#                      the idle-close fault run, queries in each, seconds
#                      without queries before each (default 5, 20, 3)
#   BENCH_FAULT_IDLE   seconds after which its upstream closes an idle
#                      connection (default 2)
#   BENCH_FAULT_TIMEOUT  seconds after which a query of the fault runs
#                      counts as lost (default 5)
#   BENCH_REPLAY_SECONDS, BENCH_REPLAY_RATE  length and query rate of
#                      each replay run (default 60, 1500)
#   BENCH_REPLAY_NAMES, BENCH_REPLAY_ZIPF  names of the replay zone and
#                      the exponent of their Zipf distribution (default
#                      100000, 1.0)
#   BENCH_REPLAY_RTT   round-trip time added to the replay upstream, in ms
#                      (default 20)
#   BENCH_REPLAY_PEERS forwarders of the replay (default "dotproxyd unbound")
#   BENCH_PROFILE_SECONDS  length of each profile run (default 5)
#   BENCH_PROFILE_RATE query rate of the fixed-rate profile run (default
#                      5000)
#   UDPECHO            the floor of the profile (default:
#                      build/tests/udpecho, built by make bench)

set -u
export LC_ALL=C

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/common.sh
. "$TOP/tests/common.sh"
DOTPROXYD=${DOTPROXYD:-$TOP/build/dotproxyd}
UDPECHO=${UDPECHO:-$TOP/build/tests/udpecho}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_CLIENTS=${BENCH_CLIENTS:-20}
BENCH_OUTSTANDING=${BENCH_OUTSTANDING:-500}
BENCH_RATE=${BENCH_RATE:-1000}
BENCH_HIT_NAMES=${BENCH_HIT_NAMES:-1000}
BENCH_PEERS=${BENCH_PEERS:-"dotproxyd unbound stubby dnsdist"}
BENCH_UPSTREAM_THREADS=${BENCH_UPSTREAM_THREADS:-2}
BENCH_UNBOUND_THREADS=${BENCH_UNBOUND_THREADS:-"1 2"}
BENCH_DNSDIST_INFLIGHT=${BENCH_DNSDIST_INFLIGHT:-"0 100"}
BENCH_TLS_CONNS=${BENCH_TLS_CONNS:-4}
BENCH_DOTPROXYD_CONF=${BENCH_DOTPROXYD_CONF:-}
BENCH_INSTALL=${BENCH_INSTALL:-1}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_CA_SYSTEM=${BENCH_CA_SYSTEM:-1}
BENCH_IDLE_SECONDS=${BENCH_IDLE_SECONDS:-20}
SYSTEM_CA=/etc/ssl/certs/ca-certificates.crt
BENCH_SOAK_SECONDS=${BENCH_SOAK_SECONDS:-60}
BENCH_SOAK_RATE=${BENCH_SOAK_RATE:-2000}
BENCH_SECTIONS=${BENCH_SECTIONS:-"compare soak faults replay profile"}
BENCH_FAULT_RATE=${BENCH_FAULT_RATE:-300}
BENCH_FAULT_SECONDS=${BENCH_FAULT_SECONDS:-10}
BENCH_FAULT_BURSTS=${BENCH_FAULT_BURSTS:-5}
BENCH_FAULT_BURST=${BENCH_FAULT_BURST:-20}
BENCH_FAULT_PAUSE=${BENCH_FAULT_PAUSE:-3}
BENCH_FAULT_IDLE=${BENCH_FAULT_IDLE:-2}
BENCH_FAULT_TIMEOUT=${BENCH_FAULT_TIMEOUT:-5}
BENCH_REPLAY_SECONDS=${BENCH_REPLAY_SECONDS:-60}
BENCH_REPLAY_RATE=${BENCH_REPLAY_RATE:-1500}
BENCH_REPLAY_NAMES=${BENCH_REPLAY_NAMES:-100000}
BENCH_REPLAY_ZIPF=${BENCH_REPLAY_ZIPF:-1.0}
BENCH_REPLAY_RTT=${BENCH_REPLAY_RTT:-20}
BENCH_REPLAY_PEERS=${BENCH_REPLAY_PEERS:-"dotproxyd unbound"}
BENCH_PROFILE_SECONDS=${BENCH_PROFILE_SECONDS:-5}
BENCH_PROFILE_RATE=${BENCH_PROFILE_RATE:-5000}

AUTH_NAME=dot.bench.test	# name in the upstream's certificate
ZONE=bench.test			# every name under it answers 192.0.2.1
ANSWER=192.0.2.1
D_USER=_dotproxyd
D_CHROOT=/var/empty
DNSPERF_TIMEOUT=3		# seconds before dnsperf counts a query lost
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

for v in BENCH_FAULT_RATE BENCH_FAULT_SECONDS BENCH_FAULT_BURSTS \
    BENCH_FAULT_BURST BENCH_FAULT_PAUSE BENCH_FAULT_TIMEOUT \
    BENCH_REPLAY_SECONDS BENCH_REPLAY_RATE BENCH_REPLAY_NAMES \
    BENCH_REPLAY_RTT BENCH_PROFILE_SECONDS BENCH_PROFILE_RATE; do
	case ${!v} in
	''|*[!0-9]*|0) echo "bench: $v must be a positive number" >&2
		exit 2 ;;
	esac
done
for v in $BENCH_UNBOUND_THREADS; do
	case $v in
	''|*[!0-9]*|0) echo "bench: BENCH_UNBOUND_THREADS must list positive numbers" >&2
		exit 2 ;;
	esac
done
for v in $BENCH_DNSDIST_INFLIGHT; do
	case $v in
	''|*[!0-9]*) echo "bench: BENCH_DNSDIST_INFLIGHT must list numbers" >&2
		exit 2 ;;
	esac
done
if [ -z "${BENCH_UNBOUND_THREADS// /}" ] ||
    [ -z "${BENCH_DNSDIST_INFLIGHT// /}" ]; then
	echo "bench: BENCH_UNBOUND_THREADS and BENCH_DNSDIST_INFLIGHT must not be empty" >&2
	exit 2
fi
case $BENCH_REPLAY_ZIPF in
''|.|*[!0-9.]*|*.*.*) echo "bench: BENCH_REPLAY_ZIPF must be a number" >&2
	exit 2 ;;
esac
case $BENCH_FAULT_IDLE in
''|.|*[!0-9.]*|*.*.*) echo "bench: BENCH_FAULT_IDLE must be a number of seconds" >&2
	exit 2 ;;
esac
for s in $BENCH_SECTIONS; do
	case $s in
	compare|soak|faults|replay|profile) ;;
	*) echo "bench: unknown section $s in BENCH_SECTIONS" \
	    "(compare, soak, faults, replay, profile)" >&2
		exit 2 ;;
	esac
done
case $BENCH_SECONDS in
''|*[!0-9]*|0) echo "bench: BENCH_SECONDS must be a positive number" >&2
	exit 2 ;;
esac

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# ---------------------------------------------------------------------
# Temporary directory, processes, cleanup

B_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dotproxyd-bench.XXXXXX") ||
	die "mktemp failed"
chmod 0755 "$B_DIR"

B_PIDS=()
B_POLICY_RCD=0





# spawn LOG CMD [ARGS...]: start CMD in a process group of its own,
# stdout and stderr to LOG; the pid is left in SPAWNED_PID.
spawn()
{
	local log=$1
	shift
	setsid "$@" </dev/null >"$log" 2>&1 &
	SPAWNED_PID=$!
	B_PIDS+=("$SPAWNED_PID")
}

cleanup()
{
	local status=$? p
	trap - EXIT INT TERM HUP
	for p in "${B_PIDS[@]}"; do
		alive "$p" && kill_tree "$p"
	done
	if [ "$created_user" -eq 1 ]; then
		userdel "$D_USER" >/dev/null 2>&1
		getent group "$D_USER" >/dev/null 2>&1 &&
		    groupdel "$D_USER" >/dev/null 2>&1
	fi
	[ "$created_chroot" -eq 1 ] && rmdir "$D_CHROOT" 2>/dev/null
	[ "$B_POLICY_RCD" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
	if [ "$BENCH_KEEP" = 1 ]; then
		say "bench: keeping $B_DIR"
	else
		rm -rf "$B_DIR"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'say "bench: interrupted"; exit 130' INT HUP TERM

# ---------------------------------------------------------------------
# Packages

# install_peers: install from Debian what is missing, without starting
# the packaged services (a policy-rc.d that denies them, for the
# duration of the installation only).  A package that cannot be
# installed is reported and its forwarder skipped.
HAVE_PKG=" "
install_peers()
{
	local p cand missing=""
	for p in unbound stubby dnsdist dnsperf knot-dnsutils \
	    libio-socket-ssl-perl python3 linux-perf; do
		if dpkg-query -W -f '${Status}' "$p" 2>/dev/null |
		    grep -q 'install ok installed'; then
			HAVE_PKG="$HAVE_PKG$p "
			continue
		fi
		if [ "$BENCH_INSTALL" != 1 ] || [ "$(id -u)" -ne 0 ]; then
			say "bench: $p is not installed"
			continue
		fi
		cand=$(apt-cache policy "$p" 2>/dev/null |
		    sed -n 's/^ *Candidate: *//p')
		if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
			say "bench: $p is not installable from the configured" \
			    "apt sources; skipping it"
			continue
		fi
		missing="$missing $p"
	done
	[ -n "$missing" ] || return 0
	say "bench: installing$missing"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d &&
		    chmod 0755 /usr/sbin/policy-rc.d && B_POLICY_RCD=1
	fi
	# shellcheck disable=SC2086
	if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q \
	    --no-install-recommends $missing >"$B_DIR/apt.log" 2>&1; then
		say "bench: apt-get install failed; going on with what is there"
		tail -n 5 "$B_DIR/apt.log" >&2
	fi
	if [ "$B_POLICY_RCD" -eq 1 ]; then
		rm -f /usr/sbin/policy-rc.d
		B_POLICY_RCD=0
	fi
	for p in $missing; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null |
		    grep -q 'install ok installed' &&
		    HAVE_PKG="$HAVE_PKG$p "
	done
}

has_pkg() { case $HAVE_PKG in *" $1 "*) return 0 ;; esac; return 1; }

pkg_version()
{
	dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"
}

# ---------------------------------------------------------------------
# Readiness

# ready PID PORT LOG [TENTHS]: wait until the server on 127.0.0.1 PORT
# answers a name under the zone with the expected address.
ready()
{
	local pid=$1 port=$2 log=$3 n=${4:-150} i
	shift 3
	for ((i = 0; i < n; i++)); do
		if ! alive "$pid"; then
			say "bench: the process exited during start-up:"
			tail -n 20 "$log" >&2
			return 1
		fi
		if timeout -k 1 5 kdig +time=1 +retry=0 @127.0.0.1 -p "$port" \
		    "ready-$i-$RANDOM.$ZONE" A 2>/dev/null |
		    grep -q "IN[[:space:]]*A[[:space:]]*$ANSWER"; then
			return 0
		fi
		sleep 0.1
	done
	say "bench: no answer on 127.0.0.1 port $port; last lines of its log:"
	tail -n 20 "$log" >&2
	return 1
}

# bound PID PORT LOG t|u TENTHS: wait at most TENTHS/10 s until PID has
# bound 127.0.0.1 PORT for TCP (t) or UDP (u).
bound()
{
	local pid=$1 port=$2 log=$3 proto=$4 n=$5 i
	for ((i = 0; i < n; i++)); do
		if ! alive "$pid"; then
			say "bench: the process exited during start-up:"
			tail -n 20 "$log" >&2
			return 1
		fi
		[ -n "$(ss -Hl"$proto"n "( sport = :$port )" 2>/dev/null)" ] &&
		    return 0
		sleep 0.1
	done
	say "bench: nothing bound to port $port; last lines of its log:"
	tail -n 20 "$log" >&2
	return 1
}

# ---------------------------------------------------------------------
# The upstream: unbound serving DNS over TLS, every name under $ZONE
# answered from a redirect local zone (no cache involved), everything
# else NXDOMAIN from a static root zone, so nothing leaves the machine.

# unbound_control DIR: the remote-control clause of an unbound.conf,
# on a socket in DIR, for unbound-control -c DIR/unbound.conf.
unbound_control()
{
	cat <<EOF
remote-control:
	control-enable: yes
	control-interface: "$1/control.sock"
	control-use-cert: no
EOF
}

# start_upstream [DIR [INCLUDE]]: start the upstream in DIR (default
# $B_DIR/upstream), with the server clause lines of the file INCLUDE;
# sets UP_PORT and UP_PID.
start_upstream()
{
	local dir=${1:-$B_DIR/upstream}
	mkdir -p "$dir"
	UP_PORT=$(free_port)
	{
		unbound_server "$dir" "$UP_PORT"
		cat <<EOF
	tls-port: $UP_PORT
	tls-service-key: "$B_DIR/ca/server.key"
	tls-service-pem: "$B_DIR/ca/server.pem"
	num-threads: $BENCH_UPSTREAM_THREADS
	incoming-num-tcp: 256
	tcp-idle-timeout: 120000
	local-zone: "." static
	local-zone: "test." nodefault
	local-zone: "$ZONE." redirect
	local-data: "$ZONE. 300 IN A $ANSWER"
EOF
		[ -z "${2:-}" ] || printf '\tinclude: "%s"\n' "$2"
		unbound_control "$dir"
	} >"$dir/unbound.conf"
	spawn "$dir/unbound.log" unbound -d -c "$dir/unbound.conf"
	UP_PID=$SPAWNED_PID
	# loading a large zone takes a few seconds
	bound "$UP_PID" "$UP_PORT" "$dir/unbound.log" t 600 &&
	    wait_dot "$UP_PID" "$UP_PORT" "$B_DIR/ca/ca.pem" "$AUTH_NAME" \
	    "x.$ZONE" && return 0
	tail -n 20 "$dir/unbound.log" >&2
	say "bench: the upstream unbound does not answer over TLS"
	return 1
}

# ---------------------------------------------------------------------
# The forwarders.  start_PEER DIR PORT: start it, set PEER_PID.  Each
# forwards to the DNS-over-TLS servers on the loopback ports in FWD_UPS,
# in that order, all with the certificate for $AUTH_NAME (the upstream
# unbound alone, except in the fault runs).

FWD_UPS=""

# The setting of each forwarder the next start_PEER uses, set by
# use_variant; the comparison tries each of BENCH_UNBOUND_THREADS and
# BENCH_DNSDIST_INFLIGHT and keeps the better (BEST[PEER]).
UNBOUND_THREADS=${BENCH_UNBOUND_THREADS%% *}
DNSDIST_INFLIGHT=${BENCH_DNSDIST_INFLIGHT%% *}
UNBOUND_PREFETCH=no	# the replay turns it on
declare -A BEST

# variants PEER: the settings of PEER to try, one word each.
variants()
{
	local v
	case $1 in
	unbound) for v in $BENCH_UNBOUND_THREADS; do echo "t$v"; done ;;
	dnsdist) for v in $BENCH_DNSDIST_INFLIGHT; do echo "f$v"; done ;;
	*) echo default ;;
	esac
}

# use_variant PEER [VARIANT]: set what start_PEER reads for VARIANT,
# by default the one the comparison found best, else the first.
use_variant()
{
	local v=${2:-${BEST[$1]:-$(variants "$1" | head -n 1)}}
	case $1:$v in
	unbound:t*) UNBOUND_THREADS=${v#t} ;;
	dnsdist:f*) DNSDIST_INFLIGHT=${v#f} ;;
	esac
}

# setting_of PEER [VARIANT]: the setting in words, at most 12 characters.
setting_of()
{
	local v=${2:-${BEST[$1]:-$(variants "$1" | head -n 1)}}
	case $1:$v in
	unbound:t1) echo "1 thread" ;;
	unbound:t*) echo "${v#t} threads" ;;
	dnsdist:f0) echo "no inflight" ;;
	dnsdist:f*) echo "inflight ${v#f}" ;;
	dotproxyd:*) echo "tls conns $BENCH_TLS_CONNS" ;;
	*) echo packaged ;;
	esac
}

start_dotproxyd()
{
	local dir=$1 port=$2 p
	ensure_user || die "cannot create the daemon's user or chroot"
	{
		echo "listen on 127.0.0.1 port $port"
		for p in $FWD_UPS; do
			echo "upstream 127.0.0.1 port $p name \"$AUTH_NAME\""
		done
		cat <<EOF
tls ca "$FWD_CA"
tls connections $BENCH_TLS_CONNS
allow from 127.0.0.0/8
user $D_USER
chroot "$D_CHROOT"
control socket "$dir/dotproxyd.sock"
EOF
		[ -z "$BENCH_DOTPROXYD_CONF" ] || printf '%s\n' "$BENCH_DOTPROXYD_CONF"
	} >"$dir/dotproxyd.conf"
	spawn "$dir/log" "$DOTPROXYD" -d -f "$dir/dotproxyd.conf"
	PEER_PID=$SPAWNED_PID
}

start_unbound()
{
	local dir=$1 port=$2 p
	{
		unbound_server "$dir" "$port"
		cat <<EOF
	num-threads: $UNBOUND_THREADS
	prefetch: $UNBOUND_PREFETCH
	incoming-num-tcp: 100
	do-not-query-localhost: no
	local-zone: "test." nodefault
	tls-cert-bundle: "$FWD_CA"
forward-zone:
	name: "."
	forward-tls-upstream: yes
EOF
		for p in $FWD_UPS; do
			printf '\tforward-addr: 127.0.0.1@%s#%s\n' "$p" "$AUTH_NAME"
		done
		unbound_control "$dir"
	} >"$dir/unbound.conf"
	spawn "$dir/log" unbound -d -c "$dir/unbound.conf"
	PEER_PID=$SPAWNED_PID
}

start_stubby()
{
	local dir=$1 port=$2 p
	mkdir -p "$dir/appdata"
	{
		cat <<EOF
resolution_type: GETDNS_RESOLUTION_STUB
dns_transport_list:
  - GETDNS_TRANSPORT_TLS
tls_authentication: GETDNS_AUTHENTICATION_REQUIRED
tls_ca_file: "$FWD_CA"
tls_query_padding_blocksize: 128
edns_client_subnet_private: 1
round_robin_upstreams: 1
idle_timeout: 10000
appdata_dir: "$dir/appdata"
listen_addresses:
  - 127.0.0.1@$port
upstream_recursive_servers:
EOF
		for p in $FWD_UPS; do
			printf '  - address_data: 127.0.0.1\n'
			printf '    tls_port: %s\n' "$p"
			printf '    tls_auth_name: "%s"\n' "$AUTH_NAME"
		done
	} >"$dir/stubby.yml"
	spawn "$dir/log" stubby -C "$dir/stubby.yml" -l
	PEER_PID=$SPAWNED_PID
}

start_dnsdist()
{
	local dir=$1 port=$2 p
	{
		cat <<EOF
setSecurityPollSuffix("")
setLocal("127.0.0.1:$port")
setACL({"127.0.0.0/8"})
EOF
		for p in $FWD_UPS; do
			cat <<EOF
newServer({address="127.0.0.1:$p", tls="openssl",
    subjectName="$AUTH_NAME", caStore="$FWD_CA",
    validateCertificates=true, checkName="health.$ZONE.",
    maxInFlight=$DNSDIST_INFLIGHT})
EOF
		done
		cat <<EOF
pc = newPacketCache(10000)
getPool(""):setCache(pc)
EOF
	} >"$dir/dnsdist.conf"
	spawn "$dir/log" dnsdist --supervised --disable-syslog \
	    -C "$dir/dnsdist.conf"
	PEER_PID=$SPAWNED_PID
}

# ---------------------------------------------------------------------
# Measurements

# make_names FILE COUNT TAG: COUNT distinct names under the zone, one
# dnsperf line each ("NAME A"), in random order.
make_names()
{
	awk -v n="$2" -v tag="$3" -v zone="$ZONE" -v seed="$RANDOM$$" '
	BEGIN {
		srand(seed)
		for (i = 0; i < n; i++)
			printf "%s-%d-%06x.%s A\n", tag, i,
			    int(rand() * 16777216), zone
	}' >"$1"
}

# ticks_of PID: user + system ticks of one process.
ticks_of()
{
	local f
	f=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	# shellcheck disable=SC2086
	set -- $f
	echo $(( ${12:-0} + ${13:-0} ))
}

# mem_kb Pss|Rss PID...: the proportional or the resident set size of
# the processes, from /proc/PID/smaps_rollup, summed, in KiB.  Pages the
# processes share are counted once in the sum of their PSS (divided
# among all the processes that map them), each time in that of RSS.
mem_kb()
{
	local field=$1 p sum=0 v
	shift
	for p in "$@"; do
		v=$(awk -v f="$field:" '$1 == f { print $2; exit }' \
		    "/proc/$p/smaps_rollup" 2>/dev/null)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# mib KIB: KiB in MiB, one decimal.
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# pct TICKS NANOSECONDS: CPU ticks as a percentage of one CPU over a
# wall-clock time.
pct()
{
	awk -v d="$1" -v hz="$HZ" -v ns="$2" \
	    'BEGIN { printf "%.1f", (ns > 0 ? 100 * d / hz / (ns / 1e9) : 0) }'
}

# collect KEY OUT: the figures of the perf_run into OUT, for the current
# peer, into R[KEY_qps,$peer], R[KEY_lost,$peer] and the like.
collect()
{
	local k=$1 out=$2
	R[${k}_qps,$peer]=$(qps_of "$out")
	R[${k}_lost,$peer]=$(lost_of "$out")
	R[${k}_ok,$peer]=$(noerror_of "$out")
	R[${k}_drops,$peer]=$(cat "$out.drops")
	R[${k}_cpu,$peer]=$(cpu_of "$out.cpu" fwd)
	R[${k}_upcpu,$peer]=$(cpu_of "$out.cpu" up)
	R[${k}_gencpu,$peer]=$(cpu_of "$out.cpu" gen)
	R[${k}_us,$peer]=$(us_of "$out" fwd)
}

# perf_run OUT ARGS...: run dnsperf ARGS against the current forwarder
# for BENCH_SECONDS, output to OUT.  The CPU used meanwhile goes to
# OUT.cpu, a line per process: "fwd|up|gen PID PERCENT NAME" for the
# forwarder's processes, the upstream and dnsperf itself, and to
# OUT.ticks as "fwd|up PID TICKS NAME".
perf_run()
{
	local out=$1 procs p t0 t1 w0 w1 d0 gen kind name TIMEFORMAT
	shift
	procs="$PEER_PID $(descendants "$PEER_PID")"
	: >"$out.cpu"
	declare -A before
	for p in $procs $UP_PID; do
		before[$p]=$(ticks_of "$p")
	done
	settle
	TIMEFORMAT='%U %S'
	d0=$(udp_drops)
	w0=$(date +%s%N)
	gen=$( { time timeout -k 5 $((BENCH_SECONDS + DNSPERF_TIMEOUT + 30)) \
	    dnsperf -s 127.0.0.1 -p "$PEER_PORT" -t "$DNSPERF_TIMEOUT" \
	    -l "$BENCH_SECONDS" "$@" >"$out" 2>&1; } 2>&1 )
	w1=$(date +%s%N)
	echo $(( $(udp_drops) - d0 )) >"$out.drops"
	if ! alive "$PEER_PID"; then
		say "bench: the forwarder exited during ${out##*/}; last lines of its log:"
		tail -n 15 "${out%/*}/log" >&2
	fi
	: >"$out.ticks"
	for p in $procs $UP_PID; do
		t1=$(ticks_of "$p")
		t0=${before[$p]}
		[ "$t1" -ge "$t0" ] || t1=$t0
		kind=$([ "$p" = "$UP_PID" ] && echo up || echo fwd)
		name=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | cut -c1-40)
		printf '%s %s %s %s\n' "$kind" "$p" \
		    "$(pct $((t1 - t0)) $((w1 - w0)))" "$name" >>"$out.cpu"
		printf '%s %s %s %s\n' "$kind" "$p" $((t1 - t0)) "$name" \
		    >>"$out.ticks"
	done
	# shellcheck disable=SC2086
	set -- $gen
	printf 'gen - %s dnsperf\n' "$(awk -v u="${1:-0}" -v s="${2:-0}" \
	    -v ns=$((w1 - w0)) 'BEGIN { printf "%.1f", (ns > 0 ? 100 * (u + s) / (ns / 1e9) : 0) }')" \
	    >>"$out.cpu"
}

# settle: wait (at most 15 s) until the forwarder is idle, below 5% of
# one CPU over half a second, so that a backlog left by one run does not
# count against the next.
settle()
{
	local procs i a b
	procs="$PEER_PID $(descendants "$PEER_PID")"
	for ((i = 0; i < 30; i++)); do
		# shellcheck disable=SC2086
		a=$(sum_ticks $procs)
		sleep 0.5
		# shellcheck disable=SC2086
		b=$(sum_ticks $procs)
		[ $(( (b - a) * 40 )) -le "$HZ" ] && return 0
	done
	say "bench: the forwarder is still busy after 15 s"
}

# sum_ticks PID...: user + system ticks of the processes, summed.
sum_ticks()
{
	local p sum=0
	for p in "$@"; do
		sum=$((sum + $(ticks_of "$p")))
	done
	echo "$sum"
}

# udp_drops: the kernel's count of UDP datagrams dropped for want of
# receive-buffer space (machine-wide, IPv4).
udp_drops()
{
	awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
	    $1 == "Udp:" { print $c["RcvbufErrors"]; exit }' /proc/net/snmp
}

# cpu_of OUT.cpu KIND: the summed CPU percentage of the processes of KIND.
cpu_of()
{
	awk -v k="$2" '$1 == k { s += $3 } END { printf "%.1f", s }' "$1"
}

# us_of OUT KIND [NAME]: CPU microseconds per answered query of the
# processes of KIND (fwd, up) in the perf_run to OUT, those whose
# command line has NAME if given.
us_of()
{
	awk -v k="$2" -v n="${3:-}" -v hz="$HZ" -v q="$(completed_of "$1")" '
	$1 == k && (n == "" || index($0, n)) { t += $3 }
	END { if (q > 0) printf "%.1f", t / hz * 1e6 / q; else print "-" }' \
	    "$1.ticks"
}

# qps_of, lost_of, ... OUT: a value from dnsperf's summary in OUT.
qps_of()
{
	sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' "$1" |
	    awk '{ printf "%.0f", $1 }'
}
lost_of() { sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$1"; }
sent_of() { sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p' "$1"; }
completed_of() { sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' "$1"; }
avg_lat_of()
{
	sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' "$1" |
	    awk '{ printf "%.3f", $1 * 1000 }'
}
max_lat_of()
{
	sed -n 's/^ *Average Latency (s):.*max \([0-9.]*\)).*/\1/p' "$1" |
	    awk '{ printf "%.1f", $1 * 1000 }'
}
# noerror_of OUT: percentage of NOERROR among the answers.
noerror_of()
{
	sed -n 's/^ *Response codes: *//p' "$1" |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "NOERROR") {
		v = $(i + 2); gsub(/[(%),]/, "", v); print v; exit } }'
}

declare -A R		# R[metric,peer] = value

# warm FILE: ask the names of FILE twice through the current forwarder,
# to fill its cache for a cache-hit run.
warm()
{
	local i
	for i in 1 2; do
		timeout -k 5 60 dnsperf -s 127.0.0.1 -p "$PEER_PORT" \
		    -t "$DNSPERF_TIMEOUT" -d "$1" -n 1 -c 4 -q 100 \
		    >"$1.warm$i" 2>&1
	done
}

# start_peer PEER VARIANT DIR: start PEER with the setting VARIANT in
# DIR on a port of its own (PEER_PORT) and wait until it answers.
start_peer()
{
	mkdir -p "$3"
	use_variant "$1" "$2"
	PEER_PORT=$(free_port)
	"start_$1" "$3" "$PEER_PORT"
	if ! ready "$PEER_PID" "$PEER_PORT" "$3/log"; then
		say "bench: $1 ($(setting_of "$1" "$2")) does not answer; skipped"
		kill_tree "$PEER_PID"
		return 1
	fi
	say "bench: $1 ($(setting_of "$1" "$2")) on 127.0.0.1 port $PEER_PORT ($(date +%T))"
}

# bench_peer PEER VARIANT: start the forwarder with the setting VARIANT,
# run the measurements, stop it.  The figures go to R[KEY,PEER:VARIANT].
bench_peer()
{
	local name=$1 variant=$2 peer=$1:$2 tag=$1-$2 dir=$B_DIR/$1-$2 n procs p
	start_peer "$name" "$variant" "$dir" || return 1

	# Distinct names per run and per forwarder, enough that no name
	# repeats within a run at the rates seen here (dnsperf wraps
	# around at the end of its data file; the check below tells).
	n=$((BENCH_SECONDS * 60000))
	make_names "$dir/miss-udp" "$n" "mu-$tag"
	make_names "$dir/miss-tcp" "$n" "mt-$tag"
	make_names "$dir/miss-lat" $((BENCH_SECONDS * BENCH_RATE + 1000)) \
	    "ml-$tag"
	make_names "$dir/hit" "$BENCH_HIT_NAMES" "h-$tag"

	# (1) UDP, cache hits: the same small set of names, after two
	# passes over it to fill the cache.  This runs first, while every
	# cache has room (dnsdist's packet cache, once full, takes no new
	# entries until old ones expire)
	warm "$dir/hit"
	perf_run "$dir/r-hit-udp" -d "$dir/hit" \
	    -c "$BENCH_CLIENTS" -q "$BENCH_OUTSTANDING"
	collect hu "$dir/r-hit-udp"

	# (2) UDP, every query a cache miss, as fast as the forwarder goes
	perf_run "$dir/r-miss-udp" -d "$dir/miss-udp" \
	    -c "$BENCH_CLIENTS" -q "$BENCH_OUTSTANDING"
	collect mu "$dir/r-miss-udp"
	[ "$(sent_of "$dir/r-miss-udp")" -gt "$n" ] 2>/dev/null &&
	    say "bench: $name: more queries than names in the cache-miss run; some were cache hits"

	# (3) TCP clients, cache misses
	perf_run "$dir/r-miss-tcp" -m tcp -d "$dir/miss-tcp" \
	    -c "$BENCH_CLIENTS" -q "$BENCH_OUTSTANDING"
	collect mt "$dir/r-miss-tcp"

	# (4) latency of cache misses at a fixed low rate
	perf_run "$dir/r-lat" -d "$dir/miss-lat" -c 4 -q 100 \
	    -Q "$BENCH_RATE"
	R[lat_avg,$peer]=$(avg_lat_of "$dir/r-lat")
	R[lat_max,$peer]=$(max_lat_of "$dir/r-lat")
	R[lat_lost,$peer]=$(lost_of "$dir/r-lat")

	# (5) memory after the runs, all processes of the forwarder
	procs="$PEER_PID $(descendants "$PEER_PID")"
	# shellcheck disable=SC2086
	R[pss,$peer]=$(mib "$(mem_kb Pss $procs)")
	# shellcheck disable=SC2086
	R[rss,$peer]=$(mib "$(mem_kb Rss $procs)")
	# and again after BENCH_IDLE_SECONDS without a query: what each
	# gives back when idle (dotproxyd: idle connections, freed heap)
	sleep "$BENCH_IDLE_SECONDS"
	# shellcheck disable=SC2086
	R[pss_idle,$peer]=$(mib "$(mem_kb Pss $procs)")
	local nthr=0 t
	for p in $procs; do
		t=$(awk '/^Threads:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
		nthr=$((nthr + ${t:-0}))
	done
	# shellcheck disable=SC2086
	R[nproc,$peer]="$(echo $procs | wc -w)/$nthr"
	R[ran,$peer]=1

	if [ "$name" = dotproxyd ]; then
		DP_CPU=$(awk '$1 == "fwd" { n = $5; if (n == "") n = $4
		    printf "%s%s %s%%", sep, n, $3; sep = ", " }' \
		    "$dir/r-miss-udp.cpu")
		DP_CPU_HIT=$(awk '$1 == "fwd" { n = $5; if (n == "") n = $4
		    printf "%s%s %s%%", sep, n, $3; sep = ", " }' \
		    "$dir/r-hit-udp.cpu")
	fi
	local lost=$(( ${R[mu_lost,$peer]:-0} + ${R[hu_lost,$peer]:-0} + \
	    ${R[mt_lost,$peer]:-0} + ${R[lat_lost,$peer]:-0} ))
	if [ "$lost" -gt 0 ] && [ "$name" = dotproxyd ]; then
		say "bench: dotproxyd lost $lost queries; last lines of its log:"
		tail -n 15 "$dir/log" >&2
	fi
	kill_tree "$PEER_PID"
	return 0
}

# pick_best PEER: of the settings of PEER measured, the one with the
# higher geometric mean of the three queries/s rows (UDP cache miss, UDP
# cache hit, TCP cache miss) becomes BEST[PEER], and its figures
# R[KEY,PEER].  Returns 1 if none was measured.
pick_best()
{
	local peer=$1 v best="" score top=-1 k
	for v in $(variants "$peer"); do
		[ -n "${R[ran,$peer:$v]:-}" ] || continue
		score=$(awk -v a="${R[mu_qps,$peer:$v]}" \
		    -v b="${R[hu_qps,$peer:$v]}" -v c="${R[mt_qps,$peer:$v]}" \
		    'BEGIN { if (a > 0 && b > 0 && c > 0)
			printf "%.0f", exp((log(a) + log(b) + log(c)) / 3)
		    else print 0 }')
		R[score,$peer:$v]=$score
		if [ "$score" -gt "$top" ]; then
			top=$score
			best=$v
		fi
	done
	[ -n "$best" ] || return 1
	BEST[$peer]=$best
	for k in "${!R[@]}"; do
		case $k in
		*",$peer:$best") R[${k%%,*},$peer]=${R[$k]} ;;
		esac
	done
	R[setting,$peer]=$(setting_of "$peer" "$best")
}

# ---------------------------------------------------------------------
# Report

# ratio A B: A/B with two decimals, "-" when either is missing or B is 0.
ratio()
{
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0)
			print "-"
		else
			printf "%.2f", a / b }'
}

# print_header PEER...: the machine and the versions of the forwarders,
# once: before the results of the first section that has some.
HEADER_DONE=0
print_header()
{
	local peer
	[ "$HEADER_DONE" -eq 0 ] || return 0
	HEADER_DONE=1
	echo
	echo "Machine: load average before the runs $LOAD0"
	echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' \
	    /proc/cpuinfo | head -n 1), Linux $(uname -r)"
	printf 'Versions: dotproxyd %s' "$(git -C "$TOP" describe --always --dirty 2>/dev/null || echo '?')"
	for peer in "$@"; do
		case $peer in
		unbound|stubby|dnsdist) printf ', %s %s' "$peer" "$(pkg_version "$peer")" ;;
		esac
	done
	printf ', dnsperf %s\n' "$(pkg_version dnsperf)"
	if [ "$FWD_CA" = "$B_DIR/ca/ca.pem" ]; then
		echo "CA bundle of the forwarders: the throwaway CA alone"
	else
		echo "CA bundle of the forwarders: $FWD_CA_CERTS certificates," \
		    "$SYSTEM_CA and the throwaway CA"
	fi
}

# print_settings: each setting tried for the forwarders that have more
# than one, with the figures it was chosen on.
print_settings()
{
	local peer v
	for peer in $RAN; do
		[ "$(variants "$peer" | wc -l)" -gt 1 ] && break
		peer=""
	done
	[ -n "$peer" ] || return 0
	echo
	echo "Settings tried; the table has the one with the higher geometric mean"
	echo "of the three queries/s rows (score):"
	printf '  %-10s%-14s%10s%10s%10s%10s%12s\n' forwarder setting \
	    "miss q/s" "hit q/s" "tcp q/s" score "PSS MiB"
	for peer in $RAN; do
		[ "$(variants "$peer" | wc -l)" -gt 1 ] || continue
		for v in $(variants "$peer"); do
			[ -n "${R[ran,$peer:$v]:-}" ] || continue
			printf '  %-10s%-14s%10s%10s%10s%10s%12s%s\n' "$peer" \
			    "$(setting_of "$peer" "$v")" "${R[mu_qps,$peer:$v]:--}" \
			    "${R[hu_qps,$peer:$v]:--}" "${R[mt_qps,$peer:$v]:--}" \
			    "${R[score,$peer:$v]:--}" "${R[pss,$peer:$v]:--}" \
			    "$([ "$v" = "${BEST[$peer]}" ] && echo '  <- best')"
		done
	done
}

print_report()
{
	local peer row key label cols=""
	for peer in $RAN; do cols="$cols $peer"; done

	echo "Upstream: unbound, DNS over TLS on 127.0.0.1, $BENCH_UPSTREAM_THREADS thread(s); runs of ${BENCH_SECONDS}s, dnsperf -c $BENCH_CLIENTS -q $BENCH_OUTSTANDING"
	echo

	local rows=(
		"setting|setting (best of those tried)"
		"mu_qps|UDP cache-miss queries/s"
		"mu_lost|UDP cache-miss lost"
		"mu_drops|UDP cache-miss socket drops"
		"mu_ok|UDP cache-miss NOERROR %"
		"mu_cpu|UDP cache-miss CPU % forwarder"
		"mu_us|UDP cache-miss CPU us/query"
		"mu_upcpu|UDP cache-miss CPU % upstream"
		"mu_gencpu|UDP cache-miss CPU % dnsperf"
		"hu_qps|UDP cache-hit queries/s"
		"hu_lost|UDP cache-hit lost"
		"hu_drops|UDP cache-hit socket drops"
		"hu_cpu|UDP cache-hit CPU % forwarder"
		"hu_us|UDP cache-hit CPU us/query"
		"hu_upcpu|UDP cache-hit CPU % upstream"
		"hu_gencpu|UDP cache-hit CPU % dnsperf"
		"mt_qps|TCP cache-miss queries/s"
		"mt_lost|TCP cache-miss lost"
		"mt_us|TCP cache-miss CPU us/query"
		"lat_avg|latency avg ms @${BENCH_RATE} q/s"
		"lat_max|latency max ms @${BENCH_RATE} q/s"
		"lat_lost|latency run lost"
		"pss|memory PSS MiB, all processes"
		"rss|memory RSS MiB, all processes"
		"pss_idle|memory PSS MiB, after ${BENCH_IDLE_SECONDS}s idle"
		"nproc|processes/threads"
	)
	{
		printf '%-36s' "metric"
		for peer in $cols; do printf '%13s' "$peer"; done
		echo
		for row in "${rows[@]}"; do
			key=${row%%|*}
			label=${row#*|}
			printf '%-36s' "$label"
			for peer in $cols; do
				printf '%13s' "${R[$key,$peer]:--}"
			done
			echo
		done
	}

	print_settings
	if [ -n "${DP_CPU:-}" ]; then
		echo
		echo "dotproxyd CPU per process (% of one CPU), UDP cache miss: $DP_CPU"
		echo "dotproxyd CPU per process (% of one CPU), UDP cache hit:  $DP_CPU_HIT"
	fi
	case " $RAN " in *" dotproxyd "*) ;; *) return 0 ;; esac
	[ "$(wc -w <<<"$RAN")" -gt 1 ] || return 0
	echo
	echo "Ratios dotproxyd/peer (queries/s: above 1 = dotproxyd faster;"
	echo "CPU per query, latency, memory: below 1 = dotproxyd better)"
	local rrows=(
		"mu_qps|UDP cache-miss queries/s"
		"hu_qps|UDP cache-hit queries/s"
		"mt_qps|TCP cache-miss queries/s"
		"mu_us|UDP cache-miss CPU us/query"
		"hu_us|UDP cache-hit CPU us/query"
		"lat_avg|latency avg"
		"lat_max|latency max"
		"pss|memory PSS"
		"rss|memory RSS"
		"pss_idle|memory PSS, after ${BENCH_IDLE_SECONDS}s idle"
	)
	printf '%-36s' "dotproxyd / peer"
	for peer in $cols; do
		[ "$peer" = dotproxyd ] || printf '%13s' "$peer"
	done
	echo
	for row in "${rrows[@]}"; do
		key=${row%%|*}
		label=${row#*|}
		printf '%-36s' "$label"
		for peer in $cols; do
			[ "$peer" = dotproxyd ] && continue
			printf '%13s' "$(ratio "${R[$key,dotproxyd]:-}" "${R[$key,$peer]:-}")"
		done
		echo
	done
}

# ---------------------------------------------------------------------
# Soak: dotproxyd alone at a steady rate well below its capacity, half
# the names new (upstream) and half repeated (cache), for a while: no
# query may be lost and resident memory should stay flat.

soak()
{
	local dir=$B_DIR/soak port procs mem0 mem1 n
	mkdir -p "$dir"
	port=$(free_port)
	start_dotproxyd "$dir" "$port"
	if ! ready "$PEER_PID" "$port" "$dir/log"; then
		say "bench: dotproxyd does not answer; no soak run"
		return 1
	fi
	n=$((BENCH_SOAK_SECONDS * BENCH_SOAK_RATE / 2 + 1000))
	make_names "$dir/new" "$n" "soak"
	make_names "$dir/old" 500 "soak-old"
	paste -d '\n' "$dir/new" <(for ((i = 0; i < n / 500 + 1; i++)); do
	    cat "$dir/old"; done | head -n "$n") >"$dir/names"
	procs="$PEER_PID $(descendants "$PEER_PID" | tr '\n' ' ')"
	timeout -k 5 $((BENCH_SOAK_SECONDS + 30)) dnsperf -s 127.0.0.1 \
	    -p "$port" -t "$DNSPERF_TIMEOUT" -d "$dir/names" -c 10 \
	    -Q "$BENCH_SOAK_RATE" -l "$BENCH_SOAK_SECONDS" >"$dir/r" 2>&1 &
	local gen=$!
	sleep 5
	# shellcheck disable=SC2086
	mem0="$(mem_kb Pss $procs) KiB (RSS $(mem_kb Rss $procs))"
	wait "$gen"
	# shellcheck disable=SC2086
	mem1="$(mem_kb Pss $procs) KiB (RSS $(mem_kb Rss $procs))"
	echo
	echo "Soak: dotproxyd at $BENCH_SOAK_RATE queries/s for" \
	    "${BENCH_SOAK_SECONDS} s, half new names, half cached"
	printf '  queries sent %s, lost %s; memory (PSS) %s after 5 s,' \
	    "$(sent_of "$dir/r")" "$(lost_of "$dir/r")" "$mem0"
	printf ' %s at the end\n' "$mem1"
	kill_tree "$PEER_PID"
}


# ---------------------------------------------------------------------
# Faults: each forwarder against upstreams that misbehave, played by the
# DNS-over-TLS server of the integration tests (start_fake_dot), with
# every query's latency and rcode recorded by dns_probe.
#   silent-first  two upstreams: first one that completes the TLS
#                 handshake and never answers, then the upstream unbound;
#                 BENCH_FAULT_RATE new names a second for
#                 BENCH_FAULT_SECONDS
#   idle-close    one upstream that answers everything and closes every
#                 connection idle for BENCH_FAULT_IDLE seconds;
#                 BENCH_FAULT_BURSTS bursts of BENCH_FAULT_BURST new
#                 names, each after BENCH_FAULT_PAUSE seconds without a
#                 query

# lib_import NAME...: define these functions of tests/integration/lib.sh
# here.  Only they are taken: that file as a whole is the library of the
# test scripts, with their TAP output, exit trap and watchdog.
lib_import()
{
	local f body
	for f in "$@"; do
		body=$(sed -n "/^$f()\$/,/^}\$/p" "$TOP/tests/integration/lib.sh")
		[ -n "$body" ] || return 1
		eval "$body"
	done
}

# dns_probe PORT TIMEOUT rate QPS <NAMES
# dns_probe PORT TIMEOUT bursts COUNT SIZE PAUSE <NAMES
# An A query (RD, no EDNS) for each name of NAMES (the first word of
# each line) to 127.0.0.1 PORT over UDP, all from one socket: QPS
# queries a second; or COUNT bursts of SIZE queries sent at once, each
# after PAUSE seconds without a query and once the previous burst is
# answered or timed out.  Prints a line per query: the burst (1 in rate
# mode), the name, the rcode, the latency in ms ("none -" for a query
# without an answer with its ID and question within TIMEOUT seconds) and
# when it was sent, in seconds from the start.  It ends by itself within
# its own run time plus 30 seconds.
dns_probe()
{
	perl -e '
		use strict;
		use warnings;
		use IO::Select;
		use IO::Socket::IP;
		use Socket qw(SOL_SOCKET SO_RCVBUF MSG_DONTWAIT);
		use Time::HiRes qw(time sleep);

		my ($port, $timeout, $mode, @arg) = @ARGV;
		my @names = map { (split)[0] } <STDIN>;
		die "no names\n" unless @names;
		die "more than 65536 names\n" if @names > 65536;
		my ($rate, $bursts, $size, $pause);
		if ($mode eq "rate") {
			$rate = $arg[0];
		} elsif ($mode eq "bursts") {
			($bursts, $size, $pause) = @arg;
			die "not enough names\n" if @names < $bursts * $size;
		} else {
			die "unknown mode $mode\n";
		}
		alarm(int($mode eq "rate" ? @names / $rate + $timeout + 30 :
		    $bursts * ($pause + $timeout) + 30));

		my $s = IO::Socket::IP->new(PeerHost => "127.0.0.1",
		    PeerPort => $port, Proto => "udp") or die "socket: $@\n";
		setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1 << 20);
		my $sel = IO::Select->new($s);
		my $base = int rand 65536;
		my (@q, @sent, @lat, @rc);
		my @rcodes = qw(NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED);
		for my $i (0 .. $#names) {
			my $m = pack("n n n n n n", ($base + $i) & 0xffff,
			    0x0100, 1, 0, 0, 0);
			$m .= pack("C/a*", $_) for split /\./, $names[$i];
			$q[$i] = $m . pack("C n n", 0, 1, 1);
		}
		sub send_query {
			my ($i) = @_;
			$sent[$i] = time;
			defined send($s, $q[$i], 0) or warn "send: $!\n";
		}
		# read what has come, for at most WAIT seconds
		sub receive {
			my ($wait) = @_;
			return unless $sel->can_read($wait > 0 ? $wait : 0);
			while (defined recv($s, my $m, 65535, MSG_DONTWAIT)) {
				my $now = time;
				next if length($m) < 12;
				my ($id, $fl) = unpack("n n", $m);
				my $i = ($id - $base) & 0xffff;
				next if $i > $#names || !defined $sent[$i] ||
				    defined $lat[$i];
				# the same question (name, type, class)
				my $ql = length($q[$i]) - 12;
				next if length($m) < 12 + $ql ||
				    lc substr($m, 12, $ql) ne lc substr($q[$i], 12);
				next if $now - $sent[$i] > $timeout;
				$lat[$i] = $now - $sent[$i];
				$rc[$i] = $rcodes[$fl & 15] // "RCODE" . ($fl & 15);
			}
		}
		# wait until the queries FROM .. TO are answered or timed out
		sub drain {
			my ($from, $to) = @_;
			for (;;) {
				my $now = time;
				my $left = 0;
				for my $i ($from .. $to) {
					next if defined $lat[$i];
					my $t = $sent[$i] + $timeout - $now;
					$left = $t if $t > $left;
				}
				last if $left <= 0;
				receive($left < 0.1 ? $left : 0.1);
			}
		}

		my @group;
		my $t0 = time;
		if ($mode eq "rate") {
			for my $i (0 .. $#names) {
				my $at = $t0 + $i / $rate;
				while ((my $w = $at - time) > 0) {
					receive($w);
				}
				send_query($i);
				$group[$i] = 1;
			}
			drain(0, $#names);
		} else {
			my $n = 0;
			for my $b (1 .. $bursts) {
				my $end = time + $pause;
				while ((my $w = $end - time) > 0) {
					receive($w);
				}
				for (1 .. $size) {
					$group[$n] = $b;
					send_query($n++);
				}
				drain($n - $size, $n - 1);
			}
			$#names = $n - 1;
		}
		for my $i (0 .. $#names) {
			printf "%d %s %s %s %.3f\n", $group[$i], $names[$i],
			    $rc[$i] // "none",
			    defined $lat[$i] ? sprintf("%.3f", $lat[$i] * 1000) : "-",
			    $sent[$i] - $t0;
		}
	' "$@"
}

# fault_stats FILE TIMEOUT: from the output of dns_probe, "SENT ANSWERED
# SERVFAIL LOST P50 P99 MAX", the latencies in ms over every query
# sent, nearest rank, an unanswered query counting as infinitely slow
# (shown as ">TIMEOUT").
fault_stats()
{
	awk '{ print ($4 == "-" ? "inf" : $4), $3 }' "$1" | sort -g |
	    awk -v t="$2" '
	function fmt(x) { return x == "inf" ? ">" t * 1000 : sprintf("%.1f", x) }
	function rank(q,   k) {
		k = int(q * n - 1e-9) + 1
		return fmt(v[k < 1 ? 1 : k])
	}
	{
		v[++n] = $1
		if ($1 == "inf") lost++
		if ($2 == "SERVFAIL") sf++
	}
	END {
		if (n == 0) { print "0 0 0 0 - - -"; exit }
		printf "%d %d %d %d %s %s %s\n", n, n - lost, sf, lost,
		    rank(0.5), rank(0.99), fmt(v[n])
	}'
}

# fault_listening PID PORT LOG: wait (15 s at most) until the forwarder
# has bound UDP 127.0.0.1 PORT, then 1 s more for the rest of its
# start-up, without sending it a query.
fault_listening() { bound "$1" "$2" "$3" u 150 && sleep 1; }

# fault_ready PID PORT LOG: wait (about 45 s at most) until the forwarder
# answers a query, whatever the rcode.
fault_ready()
{
	local pid=$1 port=$2 log=$3 i
	for ((i = 0; i < 20; i++)); do
		if ! alive "$pid"; then
			say "bench: the process exited during start-up:"
			tail -n 20 "$log" >&2
			return 1
		fi
		timeout -k 1 5 kdig +time=2 +retry=0 @127.0.0.1 -p "$port" \
		    "ready-$i-$RANDOM.$ZONE" A 2>/dev/null |
		    grep -q -- '->>HEADER<<-' && return 0
		sleep 0.2
	done
	say "bench: no answer on 127.0.0.1 port $port; last lines of its log:"
	tail -n 20 "$log" >&2
	return 1
}

declare -A F		# F[peer,case] = output of fault_stats

# fault_case PEER CASE MODE ARG: start the misbehaving server in MODE
# (ARG its argument), then PEER forwarding to it (and to the upstream
# unbound after it for silent-first), run the probe of CASE, stop both.
# The silent-first run starts as soon as the forwarder listens, before
# any query went through it, so that it includes finding out that the
# first upstream is silent.  The idle-close run starts once a query was
# answered, so that every burst finds the connection it left closed.
fault_case()
{
	local peer=$1 case=$2 mode=$3 arg=$4 dir=$B_DIR/faults/$1/$2 port n
	local wait=fault_ready
	[ "$case" = silent-first ] && wait=fault_listening
	mkdir -p "$dir"
	cp "$B_DIR/ca/server.pem" "$B_DIR/ca/server.key" "$dir/"
	port=$(free_port)
	if ! start_fake_dot "$dir" "$port" "$mode" "$arg"; then
		say "bench: the $mode server does not listen; no $case run for $peer"
		return 1
	fi
	FWD_UPS=$port
	[ "$case" = silent-first ] && FWD_UPS="$port $UP_PORT"
	PEER_PORT=$(free_port)
	use_variant "$peer"
	"start_$peer" "$dir" "$PEER_PORT"
	if ! "$wait" "$PEER_PID" "$PEER_PORT" "$dir/log"; then
		say "bench: $peer does not answer; no $case run"
		kill_tree "$PEER_PID"
		kill_tree "$FAKE_PID"
		FWD_UPS=$UP_PORT
		return 1
	fi
	say "bench: $peer, $case ($(date +%T))"
	if [ "$case" = silent-first ]; then
		n=$((BENCH_FAULT_RATE * BENCH_FAULT_SECONDS))
		make_names "$dir/names" "$n" "fs-$peer"
		dns_probe "$PEER_PORT" "$BENCH_FAULT_TIMEOUT" rate \
		    "$BENCH_FAULT_RATE" <"$dir/names" >"$dir/probe"
	else
		n=$((BENCH_FAULT_BURSTS * BENCH_FAULT_BURST))
		make_names "$dir/names" "$n" "fi-$peer"
		dns_probe "$PEER_PORT" "$BENCH_FAULT_TIMEOUT" bursts \
		    "$BENCH_FAULT_BURSTS" "$BENCH_FAULT_BURST" \
		    "$BENCH_FAULT_PAUSE" <"$dir/names" >"$dir/probe"
	fi
	F[$peer,$case]=$(fault_stats "$dir/probe" "$BENCH_FAULT_TIMEOUT")
	[ "$peer" = dotproxyd ] && timeout -k 1 10 "${DOTPROXYD%/*}/dotproxyctl" \
	    -s "$dir/dotproxyd.sock" status >"$dir/status" 2>&1
	F[$peer,$case,conns]=$(grep -c '^conn ' "$dir/fake-$port.events" 2>/dev/null)
	F[$peer,$case,queries]=$(grep -c '^query ' "$dir/fake-$port.events" 2>/dev/null)
	if ! alive "$PEER_PID"; then
		say "bench: $peer exited during the $case run; last lines of its log:"
		tail -n 15 "$dir/log" >&2
	fi
	kill_tree "$PEER_PID"
	kill_tree "$FAKE_PID"
	FWD_UPS=$UP_PORT
	return 0
}

FAULT_RAN=""

faults()
{
	local peer
	lib_import start_fake_dot wait_for port_listening ||
	    die "start_fake_dot not found in tests/integration/lib.sh; no fault runs"
	case $(declare -f start_fake_dot) in
	*silent*idle*) ;;
	*) die "start_fake_dot has no silent and idle modes; no fault runs" ;;
	esac
	perl -MIO::Socket::SSL -e 1 2>/dev/null ||
	    die "perl IO::Socket::SSL is missing; no fault runs"
	for peer in $BENCH_PEERS; do
		usable "$peer" || continue
		fault_case "$peer" silent-first silent ""
		fault_case "$peer" idle-close idle "$BENCH_FAULT_IDLE"
		FAULT_RAN="$FAULT_RAN $peer"
	done
}

print_faults()
{
	local peer case s
	echo
	echo "Faults: latency in ms over every query sent (nearest rank); a query"
	echo "without an answer within ${BENCH_FAULT_TIMEOUT} s is lost and counts as slower than that"
	echo "  silent-first: upstream 1 completes TLS and never answers, upstream 2 is the unbound"
	echo "                above; $BENCH_FAULT_RATE new names/s for $BENCH_FAULT_SECONDS s"
	echo "  idle-close:   one upstream closing connections idle for $BENCH_FAULT_IDLE s;" \
	    "$BENCH_FAULT_BURSTS bursts of $BENCH_FAULT_BURST new names,"
	echo "                each after $BENCH_FAULT_PAUSE s without queries"
	printf '  settings:    '
	for peer in $FAULT_RAN; do
		printf ' %s %s;' "$peer" "$(setting_of "$peer")"
	done
	echo
	echo
	printf '%-12s%-14s%7s%10s%10s%7s%10s%10s%10s%14s\n' forwarder case sent \
	    answered SERVFAIL lost "p50 ms" "p99 ms" "max ms" "faulty conn/q"
	for peer in $FAULT_RAN; do
		for case in silent-first idle-close; do
			s=${F[$peer,$case]:-"- - - - - - -"}
			# shellcheck disable=SC2086
			set -- $s
			printf '%-12s%-14s%7s%10s%10s%7s%10s%10s%10s%14s\n' \
			    "$peer" "$case" "$1" "$2" "$3" "$4" "$5" "$6" "$7" \
			    "${F[$peer,$case,conns]:--}/${F[$peer,$case,queries]:--}"
		done
	done
	echo
	echo "faulty conn/q: TLS connections and queries the misbehaving upstream received"
}

# ---------------------------------------------------------------------
# Replay: dotproxyd and unbound (prefetch on) at a steady rate of names
# drawn from a Zipf distribution over BENCH_REPLAY_NAMES names, with
# TTLs from 30 s to 1 day, served by an upstream unbound of its own
# (a local zone generated by replay.py) behind a TCP relay that adds
# BENCH_REPLAY_RTT ms of round trip.  The kernel's netem would do the
# same for a network namespace, but it is often not built (nor veth):
# the relay works everywhere.

REPLAY_ZONE=replay.test
REPLAY_PY=$TOP/tests/bench/replay.py
declare -A P		# P[peer,what] = replay figures

# replay_upstream_queries: the queries the replay upstream has received.
replay_upstream_queries()
{
	unbound_stat "$B_DIR/replay/upstream" total.num.queries
}

# unbound_stat DIR NAME: a counter of the unbound whose unbound.conf is
# in DIR, from unbound-control.
unbound_stat()
{
	timeout -k 1 10 unbound-control -c "$1/unbound.conf" stats_noreset \
	    2>/dev/null | sed -n "s/^$2=//p"
}

# cache_counts PEER DIR: "HITS MISSES" of the forwarder's cache so far.
cache_counts()
{
	case $1 in
	dotproxyd)
		timeout -k 1 10 "${DOTPROXYD%/*}/dotproxyctl" \
		    -s "$2/dotproxyd.sock" stats 2>/dev/null |
		    awk '/^cache hits / { h = $NF } /^cache misses / { m = $NF }
			END { print h + 0, m + 0 }' ;;
	unbound)
		echo "$(unbound_stat "$2" total.num.cachehits)" \
		    "$(unbound_stat "$2" total.num.cachemiss)" ;;
	*) echo "- -" ;;
	esac
}

# replay_peer PEER: one replay run through PEER, figures into P.
replay_peer()
{
	local peer=$1 dir=$B_DIR/replay/$1 c0 c1 u0 u1 d0 procs p t0 t1 lat
	local secs=$BENCH_REPLAY_SECONDS
	[ "$peer" = unbound ] && UNBOUND_PREFETCH=yes
	start_peer "$peer" "${BEST[$peer]:-}" "$dir"
	p=$?
	UNBOUND_PREFETCH=no
	[ "$p" -eq 0 ] || return 1
	procs="$PEER_PID $(descendants "$PEER_PID")"
	c0=$(cache_counts "$peer" "$dir")
	u0=$(replay_upstream_queries)
	t0=0
	for p in $procs; do t0=$((t0 + $(ticks_of "$p"))); done
	d0=$(udp_drops)
	timeout -k 5 $((secs + DNSPERF_TIMEOUT + 60)) dnsperf -s 127.0.0.1 \
	    -p "$PEER_PORT" -t "$DNSPERF_TIMEOUT" -d "$B_DIR/replay/queries" \
	    -n 1 -l "$secs" -Q "$BENCH_REPLAY_RATE" -c 10 -q 2000 -b 2048 -v \
	    >"$dir/r" 2>&1
	P[$peer,drops]=$(( $(udp_drops) - d0 ))
	t1=0
	for p in $procs; do t1=$((t1 + $(ticks_of "$p"))); done
	c1=$(cache_counts "$peer" "$dir")
	u1=$(replay_upstream_queries)
	lat=$(python3 "$REPLAY_PY" latency "$dir/r")
	# shellcheck disable=SC2086
	set -- $lat
	P[$peer,sent]=${1:--} P[$peer,answered]=${2:--} P[$peer,lost]=${3:--}
	P[$peer,p50]=${4:--} P[$peer,p99]=${5:--} P[$peer,p999]=${6:--}
	P[$peer,max]=${7:--}
	P[$peer,hit]=$(awk -v a="$c0" -v b="$c1" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		h = y[1] - x[1]; m = y[2] - x[2]
		if (x[1] == "-" || h + m <= 0) print "-"
		else printf "%.1f", 100 * h / (h + m) }')
	P[$peer,up]=$(awk -v a="$u0" -v b="$u1" -v q="${2:-0}" 'BEGIN {
		if (a == "" || b == "" || q == 0) print "-"
		else printf "%.1f", 100 * (b - a) / q }')
	P[$peer,us]=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v q="${2:-0}" 'BEGIN {
		if (q > 0) printf "%.1f", t / hz * 1e6 / q; else print "-" }')
	# shellcheck disable=SC2086
	P[$peer,pss]=$(mib "$(mem_kb Pss $procs)")
	P[$peer,setting]=$(setting_of "$peer")
	[ "$peer" = unbound ] && P[$peer,setting]="${P[$peer,setting]}, prefetch"
	[ "$peer" = dotproxyd ] && timeout -k 1 10 "${DOTPROXYD%/*}/dotproxyctl" \
	    -s "$dir/dotproxyd.sock" stats >"$dir/stats" 2>&1
	alive "$PEER_PID" || {
		say "bench: $peer exited during the replay; last lines of its log:"
		tail -n 15 "$dir/log" >&2
	}
	kill_tree "$PEER_PID"
	REPLAY_RAN="$REPLAY_RAN $peer"
}

REPLAY_RAN=""

replay()
{
	local dir=$B_DIR/replay n peer main_port=$UP_PORT main_pid=$UP_PID
	local relay_pid relay_port up_pid
	command -v python3 >/dev/null 2>&1 || {
		say "bench: python3 not found; no replay"
		return 1
	}
	mkdir -p "$dir"
	n=$((BENCH_REPLAY_SECONDS * BENCH_REPLAY_RATE))
	say "bench: replay: making $BENCH_REPLAY_NAMES names and $n queries"
	if ! {
		echo "local-zone: \"$REPLAY_ZONE.\" static"
		python3 "$REPLAY_PY" zone "$BENCH_REPLAY_NAMES" "$REPLAY_ZONE" 1
	} >"$dir/zone.conf" ||
	    ! python3 "$REPLAY_PY" queries "$BENCH_REPLAY_NAMES" \
	    "$REPLAY_ZONE" "$n" "$BENCH_REPLAY_ZIPF" 2 >"$dir/queries"; then
		say "bench: replay.py failed; no replay"
		return 1
	fi
	REPLAY_DISTINCT=$(sort -u "$dir/queries" | wc -l)

	if ! start_upstream "$dir/upstream" "$dir/zone.conf"; then
		UP_PORT=$main_port UP_PID=$main_pid
		say "bench: no replay"
		return 1
	fi
	REPLAY_UP_PORT=$UP_PORT
	up_pid=$UP_PID
	UP_PORT=$main_port UP_PID=$main_pid

	# the relay ends by itself after the runs, with some margin
	relay_port=$(free_port)
	spawn "$dir/relay.log" python3 "$REPLAY_PY" relay "$relay_port" \
	    "$REPLAY_UP_PORT" "$BENCH_REPLAY_RTT" \
	    $(( (BENCH_REPLAY_SECONDS + 120) * $(wc -w <<<"$BENCH_REPLAY_PEERS") + 60 ))
	relay_pid=$SPAWNED_PID
	if ! bound "$relay_pid" "$relay_port" "$dir/relay.log" t 100 ||
	    ! wait_dot "$relay_pid" "$relay_port" "$B_DIR/ca/ca.pem" \
	    "$AUTH_NAME" "n000000.$REPLAY_ZONE"; then
		say "bench: the relay does not answer; no replay"
		kill_tree "$relay_pid"
		kill_tree "$up_pid"
		return 1
	fi
	FWD_UPS=$relay_port
	for peer in $BENCH_REPLAY_PEERS; do
		case $peer in
		dotproxyd|unbound) usable "$peer" && replay_peer "$peer" ;;
		*) say "bench: no replay for $peer (no cache statistics read)" ;;
		esac
	done
	FWD_UPS=$UP_PORT
	kill_tree "$relay_pid"
	kill_tree "$up_pid"
}

print_replay()
{
	local peer f
	echo
	echo "Replay: $BENCH_REPLAY_RATE queries/s for $BENCH_REPLAY_SECONDS s," \
	    "names drawn from a Zipf distribution (exponent $BENCH_REPLAY_ZIPF)"
	echo "over $BENCH_REPLAY_NAMES names with TTLs from 30 s to 1 day," \
	    "$REPLAY_DISTINCT of them asked;"
	echo "upstream $BENCH_REPLAY_RTT ms away (delaying TCP relay)." \
	    "A cache that kept every answer would answer"
	awk -v d="$REPLAY_DISTINCT" \
	    -v n=$((BENCH_REPLAY_SECONDS * BENCH_REPLAY_RATE)) \
	    'BEGIN { printf "%.1f%% of the queries.\n", 100 * (n - d) / n }'
	echo
	printf '%-10s%-20s%7s%6s%7s%8s%8s%8s%9s%8s%8s%8s\n' forwarder setting \
	    sent lost "hit %" "up %" "p50 ms" "p99 ms" "p99.9 ms" "max ms" \
	    "us/q" "PSS MiB"
	for peer in $REPLAY_RAN; do
		printf '%-10s%-20s' "$peer" "${P[$peer,setting]}"
		for f in sent lost hit up p50 p99 p999 max us pss; do
			case $f in
			sent|p999) printf '%9s' "${P[$peer,$f]}" ;;
			*) printf '%8s' "${P[$peer,$f]}" ;;
			esac
		done
		echo
	done
	echo
	echo "hit %: answers from the cache, from the forwarder's own counters;"
	echo "up %: queries the upstream received per query answered (prefetches included);"
	echo "latency percentiles over every query sent, a lost one counting as slowest;"
	echo "us/q: the forwarder's CPU time per query answered."
}

# ---------------------------------------------------------------------
# Profile: each forwarder answering a small set of names from its
# cache, at full speed and at BENCH_PROFILE_RATE queries/s: its CPU time
# per query, per process for dotproxyd; then a third run with perf
# recording dotproxyd's listener, for where that time goes.

declare -A Q		# Q[peer,what] = profile figures
PROFILE_RAN=""

profile_peer()
{
	local peer=$1 dir=$B_DIR/profile/$1 listener lost1 lost2
	start_peer "$peer" "${BEST[$peer]:-}" "$dir" || return 1
	make_names "$dir/hit" "$BENCH_HIT_NAMES" "p-$peer"
	warm "$dir/hit"
	BENCH_SECONDS=$BENCH_PROFILE_SECONDS perf_run "$dir/full" \
	    -d "$dir/hit" -c "$BENCH_CLIENTS" -q "$BENCH_OUTSTANDING"
	BENCH_SECONDS=$BENCH_PROFILE_SECONDS perf_run "$dir/rate" \
	    -d "$dir/hit" -c 4 -q 100 -Q "$BENCH_PROFILE_RATE"
	Q[$peer,setting]=$(setting_of "$peer")
	Q[$peer,qps]=$(qps_of "$dir/full")
	Q[$peer,full]=$(us_of "$dir/full" fwd)
	Q[$peer,rate]=$(us_of "$dir/rate" fwd)
	lost1=$(lost_of "$dir/full")
	lost2=$(lost_of "$dir/rate")
	Q[$peer,lost]=$(( ${lost1:-0} + ${lost2:-0} ))
	Q[$peer,up]=$(us_of "$dir/full" up)
	if [ "$peer" = dotproxyd ]; then
		Q[$peer,detail]=$(for p in parent listener upstream; do
			printf '%s %s/%s us, ' "$p" \
			    "$(us_of "$dir/full" fwd "dotproxyd: $p")" \
			    "$(us_of "$dir/rate" fwd "dotproxyd: $p")"
		done)
		listener=$(pgrep -f -P "$PEER_PID" '^dotproxyd: listener' |
		    head -n 1)
		if [ -n "$listener" ] && command -v perf >/dev/null 2>&1; then
			profile_record "$dir" "$listener" perf-full \
			    -c "$BENCH_CLIENTS" -q "$BENCH_OUTSTANDING"
			profile_record "$dir" "$listener" perf-rate \
			    -c 4 -q 100 -Q "$BENCH_PROFILE_RATE"
			PROFILE_TOP=$dir
		fi
	fi
	kill_tree "$PEER_PID"
	PROFILE_RAN="$PROFILE_RAN $peer"
}

# profile_record DIR PID NAME DNSPERF-ARGS...: a cache-hit run with perf
# sampling the process PID and counting its system calls; where its time
# went to DIR/NAME.top.
profile_record()
{
	local dir=$1 pid=$2 name=$3 rec stat n
	shift 3
	settle
	perf record -F 1999 -p "$pid" -o "$dir/$name.data" \
	    -- sleep $((BENCH_PROFILE_SECONDS + 1)) >"$dir/$name.log" 2>&1 &
	rec=$!
	perf stat -x ' ' -e raw_syscalls:sys_enter -p "$pid" \
	    -o "$dir/$name.stat" -- sleep $((BENCH_PROFILE_SECONDS + 1)) \
	    >/dev/null 2>&1 &
	stat=$!
	B_PIDS+=("$rec" "$stat")
	timeout -k 5 $((BENCH_PROFILE_SECONDS + DNSPERF_TIMEOUT + 30)) \
	    dnsperf -s 127.0.0.1 -p "$PEER_PORT" -t "$DNSPERF_TIMEOUT" \
	    -l "$BENCH_PROFILE_SECONDS" -d "$dir/hit" "$@" >"$dir/$name.r" 2>&1
	wait "$rec" "$stat"
	n=$(completed_of "$dir/$name.r")
	{
		awk -v n="${n:-0}" '$2 == "raw_syscalls:sys_enter" && n > 0 {
		    printf "system calls per query: %.2f\n", $1 / n }' \
		    "$dir/$name.stat"
		perf report -i "$dir/$name.data" --stdio --sort dso \
		    --percent-limit 1 2>/dev/null | awk '/^ *[0-9.]+%/ {
			printf "%s%s %s", (s ? ", " : "by object: "), $2, $1; s = 1 }
		    END { if (s) print "" }'
		perf report -i "$dir/$name.data" --stdio --sort dso,sym \
		    --percent-limit 1 2>/dev/null | grep '^ *[0-9.]*%' |
		    head -n 15
	} >"$dir/$name.top"
}

# profile_floor: the same cache-hit runs against udpecho, which answers
# each datagram with its own bytes from the same batched loop as
# dotproxyd's listener and does nothing else: what the kernel's UDP path
# alone costs per query on this machine, under this load generator.
profile_floor()
{
	local dir=$B_DIR/profile/floor
	[ -x "$UDPECHO" ] || { say "bench: $UDPECHO not built; no floor"; return 1; }
	mkdir -p "$dir"
	cp "$B_DIR/profile/dotproxyd/hit" "$dir/hit" 2>/dev/null ||
	    make_names "$dir/hit" "$BENCH_HIT_NAMES" p-floor
	PEER_PORT=$(free_port)
	spawn "$dir/log" "$UDPECHO" "$PEER_PORT"
	PEER_PID=$SPAWNED_PID
	if ! bound "$PEER_PID" "$PEER_PORT" "$dir/log" u 50; then
		kill_tree "$PEER_PID"
		return 1
	fi
	BENCH_SECONDS=$BENCH_PROFILE_SECONDS perf_run "$dir/full" \
	    -d "$dir/hit" -c "$BENCH_CLIENTS" -q "$BENCH_OUTSTANDING"
	BENCH_SECONDS=$BENCH_PROFILE_SECONDS perf_run "$dir/rate" \
	    -d "$dir/hit" -c 4 -q 100 -Q "$BENCH_PROFILE_RATE"
	Q[floor,setting]="udpecho"
	Q[floor,qps]=$(qps_of "$dir/full")
	Q[floor,full]=$(us_of "$dir/full" fwd)
	Q[floor,rate]=$(us_of "$dir/rate" fwd)
	Q[floor,lost]=$(( $(lost_of "$dir/full") + $(lost_of "$dir/rate") ))
	Q[floor,up]="-"
	kill_tree "$PEER_PID"
	PEER_PID=""
	PROFILE_RAN="$PROFILE_RAN floor"
}

print_profile()
{
	local peer
	echo
	echo "Profile: cache hits ($BENCH_HIT_NAMES names, cached), CPU us per" \
	    "query answered, $BENCH_PROFILE_SECONDS s runs"
	echo
	printf '%-10s%-14s%12s%12s%14s%8s%12s\n' forwarder setting \
	    "full q/s" "us/q full" "us/q @$BENCH_PROFILE_RATE" lost \
	    "upstream us"
	for peer in $PROFILE_RAN; do
		printf '%-10s%-14s%12s%12s%14s%8s%12s\n' "$peer" \
		    "${Q[$peer,setting]}" "${Q[$peer,qps]}" "${Q[$peer,full]}" \
		    "${Q[$peer,rate]}" "${Q[$peer,lost]}" "${Q[$peer,up]}"
	done
	[ -n "${Q[dotproxyd,detail]:-}" ] &&
	    echo "dotproxyd per process, full/@$BENCH_PROFILE_RATE: ${Q[dotproxyd,detail]%, }"
	[ -n "${Q[floor,qps]:-}" ] &&
	    echo "floor: udpecho answers each datagram with its own bytes from the" \
	    "same batched loop and does nothing else: the kernel's UDP path alone"
	if [ -n "${PROFILE_TOP:-}" ]; then
		echo
		echo "dotproxyd listener, perf samples (1999 Hz), full speed:"
		sed 's/^/  /' "$PROFILE_TOP/perf-full.top"
		echo
		echo "dotproxyd listener, perf samples (1999 Hz), $BENCH_PROFILE_RATE queries/s:"
		sed 's/^/  /' "$PROFILE_TOP/perf-rate.top"
	else
		echo "(no perf profile: perf not found or the listener not identified)"
	fi
}

# ---------------------------------------------------------------------
# Main

# usable PEER: a forwarder this script knows and finds installed.
usable()
{
	case $1 in
	dotproxyd) return 0 ;;
	unbound|stubby|dnsdist)
		has_pkg "$1" && command -v "$1" >/dev/null && return 0
		say "bench: $1 not available; skipped" ;;
	*) say "bench: unknown forwarder $1; skipped" ;;
	esac
	return 1
}

# section NAME: NAME is one of BENCH_SECTIONS.
section() { case " $BENCH_SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (dotproxyd needs it)"
[ -x "$DOTPROXYD" ] || die "$DOTPROXYD not built (run make)"
install_peers
for c in unbound kdig dnsperf openssl ss pgrep setsid; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found"
done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
make_ca "$B_DIR/ca" "$AUTH_NAME" || die "cannot make certificates"
# What the forwarders verify the upstream against: as users run them,
# the system's CA bundle, with the throwaway CA
FWD_CA=$B_DIR/ca/ca.pem
if [ "$BENCH_CA_SYSTEM" = 1 ] && [ -r "$SYSTEM_CA" ]; then
	FWD_CA=$B_DIR/ca/bundle.pem
	cat "$SYSTEM_CA" "$B_DIR/ca/ca.pem" >"$FWD_CA" ||
	    die "cannot write $FWD_CA"
fi
FWD_CA_CERTS=$(grep -c 'BEGIN CERTIFICATE' "$FWD_CA")
start_upstream || exit 1
say "bench: upstream unbound on 127.0.0.1 port $UP_PORT (DNS over TLS)"
FWD_UPS=$UP_PORT

RAN=""
if section compare; then
	for peer in $BENCH_PEERS; do
		usable "$peer" || continue
		for v in $(variants "$peer"); do
			bench_peer "$peer" "$v"
		done
		pick_best "$peer" && RAN="$RAN $peer"
	done
	[ -n "$RAN" ] || die "no forwarder could be measured"
	# shellcheck disable=SC2086
	print_header $RAN
	print_report
fi
if section soak && [ "$BENCH_SOAK_SECONDS" -gt 0 ]; then
	print_header dotproxyd
	soak
fi
if section faults; then
	faults
	if [ -n "$FAULT_RAN" ]; then
		# shellcheck disable=SC2086
		print_header $FAULT_RAN
		print_faults
	fi
fi
if section replay; then
	replay
	if [ -n "$REPLAY_RAN" ]; then
		# shellcheck disable=SC2086
		print_header $REPLAY_RAN
		print_replay
	fi
fi
if section profile; then
	for peer in $BENCH_PEERS; do
		usable "$peer" && profile_peer "$peer"
	done
	profile_floor
	if [ -n "$PROFILE_RAN" ]; then
		# shellcheck disable=SC2086
		print_header $PROFILE_RAN
		print_profile
	fi
fi
