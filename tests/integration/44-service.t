#!/bin/bash
# The service manager: systemd's readiness notifications (READY=1,
# RELOADING=1 then READY=1 around a reload, STOPPING=1, STATUS=) and its
# watchdog (WATCHDOG=1 only while both children answer the parent's
# heartbeats), and a start that fails loudly when a `listen on' address
# cannot be bound, naming what holds it; on a reload such an address is
# a warning and an audit record.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl python3 ss pgrep
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 17

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
AUDIT=$T_DIR/audit.log
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# hold PROTO PORT: a process named "portholder" holding 127.0.0.1@PORT
# (udp, or a listening tcp socket) until killed; sets HOLD_PID.
hold()
{
	spawn "$T_DIR/hold.log" python3 -c '
import socket, sys, time, ctypes
ctypes.CDLL(None).prctl(15, b"portholder", 0, 0, 0)
t = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, t)
s.bind(("127.0.0.1", int(sys.argv[2])))
if t == socket.SOCK_STREAM:
    s.listen(1)
open(sys.argv[3], "w").close()
time.sleep(120)
' "$1" "$2" "$T_DIR/held"
	HOLD_PID=$SPAWNED_PID
	wait_for 50 test -e "$T_DIR/held"
}

unhold()
{
	kill "$HOLD_PID" 2>/dev/null
	wait "$HOLD_PID" 2>/dev/null
	rm -f "$T_DIR/held"
}

# ---------------------------------------------------------------------
# A start with an address already taken fails, and says by whom

for proto in udp tcp; do
	make_conf "taken-$proto" -u "$UPORT"
	hold "$proto" "$PORT" || bail_out "cannot hold a $proto port"
	log=$T_DIR/taken-$proto.log
	timeout -k 1 20 "$DOTPROXYD" -d -f "$CONF_FILE" </dev/null >"$log" 2>&1
	rc=$?
	is "$rc" 1 "$proto taken at start: dotproxyd exits 1" || diag_file "$log"
	like "$(cat "$log")" \
	    "cannot listen on $proto 127\.0\.0\.1:$PORT: Address already in use \(held by portholder \(pid $HOLD_PID\)\)" \
	    "$proto taken at start: the message names the address and its holder" ||
	    diag_file "$log"
	unhold
done

# ---------------------------------------------------------------------
# Notifications, with a watchdog of 1 s (WATCHDOG=1 every 0.5 s)

NSOCK=$T_DIR/notify.sock
NLOG=$T_DIR/notify.log
spawn "$T_DIR/notify.err" python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        d = s.recv(4096).decode("ascii", "replace")
        out.write(d.replace("\n", " ") + "\n")
' "$NSOCK" "$NLOG"
wait_for 50 test -S "$NSOCK" || bail_out "no notification socket"

make_conf notify -u "$UPORT"
NOTIFY_SOCKET=$NSOCK WATCHDOG_USEC=1000000 start_dotproxyd "$CONF_FILE" ||
    bail_out "cannot start dotproxyd"
nlines() { grep -c -- "$1" "$NLOG" 2>/dev/null; }
ok "READY=1 once both children serve" wait_for 50 grep -q '^READY=1' "$NLOG"
ok "STATUS= says it serves" wait_for 50 grep -q '^STATUS=' "$NLOG"
ok "WATCHDOG=1 comes" wait_for 50 grep -q '^WATCHDOG=1' "$NLOG"
ok "STATUS= counts queries and upstreams" \
    wait_for 150 grep -Eq '^STATUS=[0-9]+ queries; 1 of 1 upstreams up' "$NLOG"

kill -HUP "$D_PID"
ok "SIGHUP: RELOADING=1 with MONOTONIC_USEC" \
    wait_for 50 grep -Eq '^RELOADING=1 MONOTONIC_USEC=[0-9]+' "$NLOG"
ready_after_reload()
{
	awk '/^RELOADING=1/ { r = 1 } r && /^READY=1/ { f = 1 } END { exit !f }' \
	    "$NLOG"
}
ok "SIGHUP: READY=1 after RELOADING=1" wait_for 50 ready_after_reload

# A stopped child answers no heartbeat: the watchdog is no longer fed.
up=$(child_named "$D_PID" upstream)
kill -STOP "$up"
# the heartbeat already answered may still feed one tick; then none
t0=$(now_ms)
wait_for 30 false
n1=$(nlines '^WATCHDOG=1')
while [ $(( $(now_ms) - t0 )) -lt 2500 ]; do sleep 0.1; done
n2=$(nlines '^WATCHDOG=1')
is "$n2" "$n1" "child stopped: no WATCHDOG=1 for 2.5 s" || diag_file "$NLOG"
kill -CONT "$up"
more_watchdogs() { [ "$(nlines '^WATCHDOG=1')" -gt "$1" ]; }
ok "child continued: WATCHDOG=1 again" wait_for 30 more_watchdogs "$n2" ||
    diag_file "$NLOG"

# ---------------------------------------------------------------------
# A reload adding an address already taken: served are the others

P2=$(free_port)
hold udp "$P2" || bail_out "cannot hold a udp port"
echo "listen on 127.0.0.1 port $P2" >>"$CONF_FILE"
kill -HUP "$D_PID"
ok "reload with a taken address: a warning" \
    log_wait "cannot listen on udp 127\.0\.0\.1:$P2: Address already in use; serving the other addresses"
ok "reload with a taken address: audited" \
    wait_for 30 grep -q "listen-failed.*127\.0\.0\.1:$P2" "$AUDIT"
is "$(status_of <<<"$(q a.example.test A)")" NOERROR \
    "reload with a taken address: the first address still answers"
unhold

stop_dotproxyd
is "$?" 0 "SIGTERM exits 0"
ok "STOPPING=1 on SIGTERM" wait_for 30 grep -q '^STOPPING=1' "$NLOG"
done_testing
