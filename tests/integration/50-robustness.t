#!/bin/bash
# Robustness: a child killed is replaced at once, under load too; a
# crash loop makes the parent give up; shutdown with queries in flight
# is bounded; no process outlives the parent.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep dnsperf
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"
perl -MJSON::PP -e 1 2>/dev/null || skip_all "perl JSON::PP not found"

plan 38

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
MPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
AUDIT=$T_DIR/audit.log
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# back_within T0: query names nobody asked before (the upstream answers
# NXDOMAIN) every 0.05 s, for at most 2 s after T0 (ms); print the time
# from T0 to the first answer from the upstream, or "none".
back_within()
{
	local t0=$1 i out
	for ((i = 0; i < 200; i++)); do
		out=$(timeout -k 1 5 "$KDIG" +time=1 +retry=0 @127.0.0.1 \
		    -p "$D_PORT" "r$i-$RANDOM.example.test" A 2>&1)
		if [ "$(status_of <<<"$out")" = NXDOMAIN ]; then
			echo $(( $(now_ms) - t0 ))
			return 0
		fi
		[ $(( $(now_ms) - t0 )) -lt 2000 ] || break
		sleep 0.05
	done
	echo none
	return 1
}

# new_child NAME OLD-PID TENTHS: wait for a NAME child of the daemon
# other than OLD-PID; print its pid.
new_child()
{
	local i c
	for ((i = 0; i < $3; i++)); do
		c=$(child_named "$D_PID" "$1")
		if [ -n "$c" ] && [ "$c" != "$2" ]; then
			echo "$c"
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# audited EVENT CHILD: the audit log has EVENT for CHILD.
audited()
{
	EV=$1 CH=$2 perl -MJSON::PP -ne '
		my $o = eval { decode_json($_) } or next;
		$found = 1 if $o->{event} eq $ENV{EV} &&
		    ($o->{child} // "") eq $ENV{CH};
		END { exit !$found }
	' "$AUDIT"
}

# ---------------------------------------------------------------------
# A child killed is replaced

# started with a descriptor on a secret file and a secret variable, that
# no child, a respawned one included, may inherit
echo "not for the children" >"$T_DIR/secret"
exec 9<"$T_DIR/secret"
SECRET_VALUE=s3cr3t-$$-$RANDOM
export DOTPROXYD_TEST_SECRET=$SECRET_VALUE
start_conf main -u "$UPORT"
exec 9<&-
unset DOTPROXYD_TEST_SECRET
PARENT=$D_PID
L1=$(child_named "$D_PID" listener)
U1=$(child_named "$D_PID" upstream)

t0=$(now_ms)
kill -KILL "$L1"
dt=$(back_within "$t0")
ok "listener killed: service back in under 1.5 s (${dt} ms)" \
    test "$dt" != none -a "${dt/none/9999}" -lt 1500
L2=$(new_child listener "$L1" 20)
ok "listener killed: a new listener ($L1 -> ${L2:-none})" test -n "$L2"
ok "listener killed: the parent is alive" alive "$PARENT"
is "$(child_named "$D_PID" upstream)" "$U1" "listener killed: the upstream process stays"
ok "listener killed: audited as child-died" audited child-died listener

t0=$(now_ms)
kill -KILL "$U1"
dt=$(back_within "$t0")
ok "upstream killed: service back in under 1.5 s (${dt} ms)" \
    test "$dt" != none -a "${dt/none/9999}" -lt 1500
U2=$(new_child upstream "$U1" 20)
ok "upstream killed: a new upstream process ($U1 -> ${U2:-none})" test -n "$U2"
ok "upstream killed: the parent is alive" alive "$PARENT"
is "$(child_named "$D_PID" listener)" "$L2" "upstream killed: the listener stays"
ok "upstream killed: audited as child-died" audited child-died upstream
for c in "listener ${L2:-0}" "upstream ${U2:-0}"; do
	read -r name pid <<<"$c"
	is "$(fds_on "$pid" "$T_DIR/secret")" "" \
	    "$name started anew: holds no descriptor the starter left open"
	mem_has "$pid" "DOTPROXYD_TEST_SECRET=$SECRET_VALUE"
	is "$?" 1 "$name started anew: inherits no environment variable"
done

# ---------------------------------------------------------------------
# Under load

for n in a b c multi text ns nx; do
	echo "$n.example.test A"
done >"$T_DIR/perf.txt"
timeout -k 1 30 dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_DIR/perf.txt" \
    -c 4 -Q 300 -l 5 -t 2 >"$T_DIR/perf.out" 2>&1 &
perf=$!
sleep 1.5
L3=$(child_named "$D_PID" listener)
kill -KILL "$L3"
L4=$(new_child listener "$L3" 40)
ok "under load: the listener killed is replaced (${L4:-none})" test -n "$L4"
wait "$perf"
out=$(q a.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.1 "under load: the daemon serves after the kill" ||
    diag "$out"
completed=$(sed -n -E 's/^ *Queries completed: *([0-9]+).*/\1/p' "$T_DIR/perf.out")
ok "under load: queries were answered (${completed:-none})" \
    test "${completed:-0}" -ge 500
ok "under load: the parent is alive" alive "$PARENT"
stop_dotproxyd
is "$?" 0 "main: SIGTERM exits 0"

# ---------------------------------------------------------------------
# A crash loop: five deaths in a row and the parent gives up

start_conf crashloop -u "$UPORT"
PARENT=$D_PID
seen="$PARENT $(descendants "$PARENT" | tr '\n' ' ')"
l=$(child_named "$D_PID" listener)
for ((k = 1; k <= 5; k++)); do
	kill -KILL "$l" 2>/dev/null
	[ "$k" -eq 5 ] && break
	l=$(new_child listener "$l" 60) || break
	seen="$seen $l"
done
is "$k" 5 "crash loop: the listener was killed five times"
if wait_gone 50 "$PARENT"; then
	pass "crash loop: the parent exits within 5 s"
else
	fail "crash loop: the parent exits within 5 s"
fi
wait "$PARENT" 2>/dev/null
rc=$?
D_PID=""
is "$rc" 1 "crash loop: the parent exits with status 1"
left=""
for p in $seen; do
	alive "$p" && left="$left $p"
done
is "$left" "" "crash loop: no process of the daemon is left"
ok "crash loop: audited as crash-loop" audited crash-loop listener
ok "crash loop: the log says the parent gives up" log_wait 'giving up'

# ---------------------------------------------------------------------
# SIGTERM with queries in flight, to an upstream that never speaks TLS

# upstream_is STATE: the mute upstream's state in `dotproxyctl status`
# is STATE (up, suspect, probing, down).
upstream_is()
{
	[ "$(ctl status 2>/dev/null | awk -v u="127.0.0.1:$MPORT" \
	    '$1 == u && $2 !~ /:$/ { print $3 }')" = "$1" ]
}

# inflight_now: the queries the listener has waiting for an answer.
inflight_now()
{
	ctl stats 2>/dev/null | awk '/^queries in flight now/ { print $NF }'
}

start_mute_tcp "$MPORT" || bail_out "cannot start a mute upstream"
start_conf inflight -u "$MPORT"
PARENT=$D_PID
kids=$(descendants "$PARENT" | tr '\n' ' ')
# Queries wait for an upstream being probed, for 2 s, and fail at once
# while it is down, between the probes: wait for a back-off to end, so
# that the queries come at the start of a probe.  (How many probes have
# failed by now, and how long the back-off is, vary.)
wait_for 100 upstream_is down
wait_for 100 upstream_is probing
for i in 1 2 3 4 5; do
	timeout -k 1 15 "$KDIG" +time=8 +retry=0 @127.0.0.1 -p "$PORT" \
	    "f$i.example.test" A >"$T_DIR/inflight-$i.out" 2>&1 &
	bg[i]=$!
done
# in flight once the listener has read them
for ((k = 0; k < 15; k++)); do
	inflight=$(inflight_now)
	[ "${inflight:-0}" -ge 1 ] && break
	sleep 0.1
done
ok "in flight: queries are waiting for the upstream (${inflight:-none})" \
    test "${inflight:-0}" -ge 1
t0=$(now_ms)
kill -TERM "$PARENT"
if wait_gone 50 "$PARENT"; then
	dt=$(( $(now_ms) - t0 ))
	pass "in flight: SIGTERM ends the parent (${dt} ms)"
else
	dt=99999
	fail "in flight: SIGTERM ends the parent"
fi
wait "$PARENT" 2>/dev/null
is "$?" 0 "in flight: the parent exits with status 0"
D_PID=""
ok "in flight: it takes less than 5 s (${dt} ms)" test "$dt" -lt 5000
# shellcheck disable=SC2086
ok "in flight: no child is left" wait_gone 10 $kids
for i in 1 2 3 4 5; do
	wait "${bg[i]}" 2>/dev/null
done
answered=$(cat "$T_DIR"/inflight-*.out | statuses_of | grep -c SERVFAIL)
is "$answered" 5 "in flight: each waiting client got SERVFAIL"
kill_tree "$MUTE_PID"

# ---------------------------------------------------------------------
# kill -9 of the parent

# hold_sockets PID FILE: take a copy of every socket PID holds
# (pidfd_getfd), write how many to FILE and keep them until killed.
# The children's channels to PID then stay open when PID dies.
hold_sockets()
{
	spawn "$T_DIR/hold.log" perl -e '
		my ($pid, $out) = @ARGV;
		my $pidfd = syscall(434, $pid + 0, 0);	# pidfd_open
		die "pidfd_open: $!\n" if $pidfd < 0;
		my @held;
		opendir(my $d, "/proc/$pid/fd") or die "$!\n";
		for my $fd (grep { /^\d+$/ } readdir $d) {
			next unless (readlink("/proc/$pid/fd/$fd") // "") =~
			    /^socket:/;
			my $n = syscall(438, $pidfd, $fd + 0, 0); # pidfd_getfd
			die "pidfd_getfd: $!\n" if $n < 0;
			push @held, $n;
		}
		open(my $f, ">", "$out.new") or die "$!\n";
		print $f scalar(@held), "\n";
		close $f;
		rename("$out.new", $out) or die "$!\n";
		sleep 60;
	' "$1" "$2"
	HOLD_PID=$SPAWNED_PID
}

start_conf orphans -u "$UPORT"
PARENT=$D_PID
kids=$(descendants "$PARENT" | tr '\n' ' ')
is "$(wc -w <<<"$kids" | tr -d ' ')" 2 "parent killed: two children before"
# with the parent's ends of their channels held open elsewhere, only
# the parent-death signal ends the children
hold_sockets "$PARENT" "$T_DIR/held"
wait_for 50 test -s "$T_DIR/held"
ok "parent killed: its sockets are held open ($(cat "$T_DIR/held" 2>&1))" \
    test "$(cat "$T_DIR/held" 2>/dev/null)" -ge 2
kill -KILL "$PARENT"
wait "$PARENT" 2>/dev/null
D_PID=""
# shellcheck disable=SC2086
if wait_gone 20 $kids; then
	pass "parent killed: the children exit within 2 s"
else
	fail "parent killed: the children exit within 2 s"
	diag "$(ps -o pid,ppid,stat,args -p "$(tr " " , <<<"${kids% }")" 2>&1)"
fi
kill_tree "$HOLD_PID"
