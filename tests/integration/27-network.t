#!/bin/bash
# Network changes: the parent watches the kernel's link, address and
# route messages and, once a burst of them has settled, logs it once and
# tells the upstream process to reconnect; queries answer throughout.
# Everything runs in a network namespace of the test's own (the script
# starts itself again under `unshare -n`), so the host's network is never
# touched: the links, addresses and routes made here vanish with it.

if [ "${T_NETNS:-}" != 1 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "1..0 # SKIP needs root"
		exit 0
	fi
	if ! command -v unshare >/dev/null 2>&1 ||
	    ! command -v ip >/dev/null 2>&1; then
		echo "1..0 # SKIP needs unshare and ip"
		exit 0
	fi
	if ! unshare -n true 2>/dev/null; then
		echo "1..0 # SKIP cannot make a network namespace"
		exit 0
	fi
	T_NETNS=1 exec unshare -n "$BASH" "$0" "$@"
fi
if ! ip link set lo up; then
	echo "Bail out! cannot bring up loopback in the new namespace"
	exit 255
fi

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep ip
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 18

# The parent's own line; the upstream process's lines come through the
# parent as "dotproxyd: upstream: ...", which this does not match.
PARENT_RE='^[^:]+: network changed \('
UPSTREAM_RE='upstream: network changed: reconnecting to the upstreams'

# notices: how many times the parent logged a network change.
notices()
{
	last_log | grep -Ec -- "$PARENT_RE"
}

# wait_notices N: wait at most 3 s until there are N notices.
wait_notices()
{
	local i
	for ((i = 0; i < 30; i++)); do
		[ "$(notices)" -ge "$1" ] && return 0
		sleep 0.1
	done
	echo "$(notices) network change notices, not $1; the log:"
	last_log | tail -n 20
	return 1
}

# answer_within TENTHS EXPECTED [KDIG ARGS...]: query every 0.1 s, at most
# TENTHS times, until the A record in the answer is EXPECTED.
answer_within()
{
	local n=$1 want=$2 i out
	shift 2
	for ((i = 0; i < n; i++)); do
		out=$(q "$@")
		[ "$(rdata_of A <<<"$out")" = "$want" ] && return 0
		sleep 0.1
	done
	echo "no answer $want within $n tenths of a second; the last try:"
	echo "$out"
	return 1
}

# netlink_groups PID: the multicast groups (hex) of each NETLINK_ROUTE
# socket PID holds, one a line, from /proc/net/netlink of this namespace.
netlink_groups()
{
	local fd inodes=" "
	for fd in /proc/"$1"/fd/*; do
		case $(readlink "$fd" 2>/dev/null) in
		socket:\[*\])
			fd=$(readlink "$fd")
			fd=${fd#socket:[}
			inodes="$inodes${fd%]} "
			;;
		esac
	done
	awk -v inodes="$inodes" 'NR > 1 && $2 == 0 &&
	    index(inodes, " " $10 " ") { print $4 }' /proc/net/netlink
}

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"
start_conf dotproxyd -d "dotproxyd starts in a network namespace of its own" \
    -u "$UPORT"

# --- the watch itself

out=$(q a.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.1 "a query answers before any change" ||
    diag "$out"
# RTMGRP_LINK 0x1, IPV4_IFADDR 0x10, IPV4_ROUTE 0x40, IPV6_IFADDR 0x100,
# IPV6_ROUTE 0x400
is "$(netlink_groups "$D_PID" | tr '\n' ' ')" "00000551 " \
    "the parent holds one netlink route socket: link, address, route groups"
LISTENER=$(child_named "$D_PID" listener)
UPSTREAM=$(child_named "$D_PID" upstream)
is "$(netlink_groups "${LISTENER:-0}")$(netlink_groups "${UPSTREAM:-0}")" "" \
    "the children hold no netlink socket"
unlike "$(last_log)" 'network changes go unnoticed' \
    "no warning about the routing socket"
is "$(notices)" 0 "a quiet network: no change logged"

# --- a burst: a new pair of links, both brought up, in one command

ip -batch - <<EOF
link add nw0 type veth peer name nw1
link set nw1 up
link set nw0 up
EOF
ok "new links that come up: the parent logs a change" wait_notices 1
# IPv6 link-local addresses follow about a second later: no change either
sleep 2
is "$(notices)" 1 "the burst is one notice, and link-local addresses none"
like "$(last_log | grep -E -- "$PARENT_RE" | tail -n 1)" \
    'network changed \(link\): the upstream process reconnects$' \
    "the notice says a link changed"
ok "after the change, a query the cache cannot answer is answered" \
    answer_within 30 192.0.2.2 b.example.test A

# --- an address, then a default route

ip addr add 198.51.100.1/24 dev nw0
ok "a new address: the parent logs a change" wait_notices 2
ip route add default via 198.51.100.254
ok "a new default route: the parent logs a change" wait_notices 3
like "$(last_log | grep -E -- "$PARENT_RE" | tail -n 1)" \
    'network changed \(default route\)' \
    "the notice says a default route changed"

# --- what does not count: another route, a link-local address, a
# neighbour entry

ip -batch - <<EOF
route add 203.0.113.0/24 via 198.51.100.254
address add 169.254.7.1/16 dev nw0 scope link
neighbour add 198.51.100.7 lladdr 02:00:00:00:00:07 dev nw0
EOF
sleep 1
is "$(notices)" 3 "another route, a link-local address, a neighbour: no change"

# --- a link going down (its addresses and routes go with it)

ip link set nw0 down
ok "a link going down: the parent logs a change" wait_notices 4
ok "after four changes, a query over TCP is answered within 3 s" \
    answer_within 30 192.0.2.3 +tcp c.example.test A

# --- what the upstream process makes of it

ok "the upstream process logs that it reconnects" \
    log_wait "$UPSTREAM_RE" 10
is "$(child_named "$D_PID" upstream)" "$UPSTREAM" \
    "the upstream process is the same one (it did not die of the message)"

stop_dotproxyd
