#!/bin/bash
# Load the listener and the upstream process cannot be allowed to choke
# on: a burst beyond every connection's in-flight slots, TCP clients that
# send without ever reading their answers (one, then 200 asking for the
# largest answers), and a connection limit held by busy connections.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd unbound kdig openssl python3
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 17

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
UNBOUND_HUGE_TXT=230	# huge.example.test: an answer of about 60 kB
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"
make_conf d -u "$UPORT" "tls connections 1"
start_dotproxyd "$CONF_FILE" || bail_out "cannot start dotproxyd"

# 1500 distinct names at once: more than one connection's 256 in-flight
# slots, so most wait for a slot and must be sent as slots free up.
answered=$(timeout 30 python3 - "$PORT" <<'PY'
import socket, struct, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.settimeout(0.5)
def query(i):
    labels = [b"burst%d" % i, b"example", b"test"]
    name = b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
    return struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + \
        struct.pack(">HH", 1, 1)
n = 1500
for i in range(n):
    s.sendto(query(i), ("127.0.0.1", port))
got = set()
end = time.time() + 10
while time.time() < end and len(got) < n:
    try:
        d, _ = s.recvfrom(4096)
    except socket.timeout:
        continue
    if len(d) >= 4 and (d[3] & 15) in (0, 3):	# NOERROR, NXDOMAIN
        got.add(struct.unpack(">H", d[:2])[0])
print(len(got))
PY
)
is "$answered" 1500 "burst: 1500 queries on one connection all answered"
out=$(ctl status 2>&1)
like "$out" "127\.0\.0\.1:$UPORT \(dot\.test\) +up +1 " \
    "burst: still one connection, as configured" || diag "$out"

# A client that sends queries for a large answer and never reads: what
# waits for it stays bounded, and everyone else is still served.
L=$(child_named "$D_PID" listener)
rss0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$L/status")
rss1=$(timeout 20 python3 - "$PORT" "$L" <<'PY'
import socket, struct, sys, time
port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
labels = [b"big", b"example", b"test"]
name = b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + name + \
    struct.pack(">HH", 16, 1)
msg = struct.pack(">H", len(q)) + q
s.sendall(msg)		# once, read: now the answer is cached
s.settimeout(5)
want, got = None, b""
while want is None or len(got) < want + 2:
    chunk = s.recv(65536)
    if not chunk:
        sys.exit(1)
    got += chunk
    if want is None and len(got) >= 2:
        want = struct.unpack(">H", got[:2])[0]
s.setblocking(False)
end = time.time() + 4
while time.time() < end:
    try:
        s.send(msg * 64)
    except BlockingIOError:
        time.sleep(0.01)
    except OSError:
        break
time.sleep(0.5)
# the listener's memory while this connection is still open
for line in open("/proc/%s/status" % sys.argv[2]):
    if line.startswith("VmRSS:"):
        print(line.split()[1])
PY
)
ok "non-reading client: listener memory bounded (${rss0} kB before, ${rss1} kB after)" \
    test "$((rss1 - rss0))" -lt 32768
is "$(child_named "$D_PID" listener)" "$L" "non-reading client: the same listener"
out=$(q a.example.test A)
is "$(status_of <<<"$out")" NOERROR "non-reading client: others are still served"

# stat_of NAME: the value of a line of `dotproxyctl stats` (0 if none).
stat_of()
{
	ctl stats 2>/dev/null | awk -v n="$1" '
	    { v = $NF; $NF = ""; sub(/^[ \t]+/, ""); sub(/[ \t]+$/, "") }
	    $0 == n { print v; found = 1 } END { if (!found) print 0 }'
}

# tcp_clients N ADDRS QUERIES NAME TYPE READ: hold N TCP connections,
# spread over the source addresses ADDRS (comma-separated), each sending
# QUERIES queries for NAME TYPE at once with a small receive buffer and
# then reading READ bytes every half second (0: never), until killed.
# Waits until every connection has sent its queries.
tcp_clients()
{
	rm -f "$T_DIR/clients.ready"
	cat >"$T_DIR/clients.py" <<'PY'
import socket, struct, sys, time
port, ready, n, addrs, count, name, qtype, rd = sys.argv[1:]
n, count, rd = int(n), int(count), int(rd)
addrs = addrs.split(",")
qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
def msg(i):
    q = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + qname + \
        struct.pack(">HH", {"A": 1, "TXT": 16}[qtype], 1)
    return struct.pack(">H", len(q)) + q
socks = []
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((addrs[i % len(addrs)], 0))
    s.connect(("127.0.0.1", int(port)))
    s.sendall(b"".join(msg(j) for j in range(count)))
    s.setblocking(False)
    socks.append(s)
open(ready, "w").close()
while True:
    time.sleep(0.5)
    for s in socks if rd else []:
        try:
            s.recv(rd)
        except OSError:
            pass
PY
	spawn "$T_DIR/clients.log" python3 "$T_DIR/clients.py" "$PORT" \
	    "$T_DIR/clients.ready" "$@"
	CLIENTS_PID=$SPAWNED_PID
	wait_for 600 test -e "$T_DIR/clients.ready"
}

# clients_stop: end tcp_clients.
clients_stop()
{
	kill_tree "$CLIENTS_PID" 2>/dev/null
}

# taken N: the listener has taken N more TCP queries than at mark, and
# none is waiting for the upstream process.
taken()
{
	[ "$(stat_of tcp)" -ge $((mark + $1)) ] &&
	    [ "$(stat_of "queries in flight now")" -eq 0 ]
}

# settled N: as taken, and the listener takes no more queries (what it
# holds is at its bound, or the socket buffers are full).
settled()
{
	local a b
	a=$(stat_of tcp)
	sleep 0.5
	b=$(stat_of tcp)
	[ "$a" = "$b" ] && taken "$1"
}

# 200 connections from 4 addresses, 128 queries each for an answer of
# about 60 kB, none read: without bounds the listener would hold 1.5 GB.
# Each connection takes 16 queries (its budget: 16 of the largest
# answers), all together hold at most 64 MiB of answers; the bound on the
# listener's peak RSS is 96 MiB above what it was: 64 MiB of answers and
# 32 MiB for the allocator, the connections and the rest.
out=$(q +tcp huge.example.test TXT)
is "$(count_rr TXT <<<"$out")" 230 "huge answers: 230 TXT records over TCP" ||
    diag "$(head -n 20 <<<"$out")"
rss0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$L/status")
mark=$(stat_of tcp)
tcp_clients 200 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 128 \
    huge.example.test TXT 0
ok "huge answers: the listener takes 16 queries or more of each connection" \
    wait_for 600 settled 3200
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$L/status")
# AddressSanitizer keeps 256 MiB of freed memory in quarantine, besides
# its shadow memory and red zones: under it the bound is 512 MiB.
bound=96
grep -q libasan "/proc/$L/maps" 2>/dev/null && bound=512
ok "huge answers: listener peak RSS under $bound MiB more (${rss0} kB before, peak ${hwm} kB)" \
    test -n "$hwm" -a -n "$rss0" -a "$((${hwm:-0} - ${rss0:-0}))" -lt $((bound * 1024))
ok "huge answers: the clients holding the most were shed" \
    log_wait 'TCP answers waiting over 64 MiB: closed [1-9]'
open=$(stat_of "tcp clients now")
ok "huge answers: connections closed (${open} of 200 open)" \
    test "$open" -lt 200
clients_stop
is "$(child_named "$D_PID" listener)" "$L" "huge answers: the same listener"
out=$(q +tcp a.example.test A)
is "$(status_of <<<"$out")" NOERROR "huge answers: a TCP client is still served" ||
    diag "$out"

stop_dotproxyd
is "$?" 0 "SIGTERM exits 0"

# The connection limit held by busy connections: under a descriptor limit
# of 200 the listener serves 64 connections.  2 addresses hold them all,
# each connection with 128 queries for an answer of about 60 kB that it
# does not read: more than the kernel's socket buffers take (at most
# 4 MiB), so the listener holds answers for every one, up to its budget
# (all together under the 64 MiB for all connections).  41 other clients
# connect one after the other: each takes the place of the oldest
# connection of a client holding the most, and is answered.
cat >"$T_DIR/dotproxyd-200" <<EOF
#!/bin/sh
ulimit -n 200 || exit 1
exec "$DOTPROXYD" "\$@"
EOF
chmod 0755 "$T_DIR/dotproxyd-200"
make_conf busy -u "$UPORT" "tls connections 1"
DOTPROXYD=$T_DIR/dotproxyd-200 start_dotproxyd "$CONF_FILE" ||
    bail_out "cannot start dotproxyd under a descriptor limit"
ok "busy: 64 TCP connections under a descriptor limit of 200" \
    log_wait 'only 64 TCP clients at a time'
mark=$(stat_of tcp)
tcp_clients 64 127.0.0.2,127.0.0.3 128 huge.example.test TXT 0
ok "busy: 64 connections hold the limit, 16 or more queries taken of each" \
    wait_for 300 settled $((64 * 16))
answered=0
for ((i = 1; i <= 41; i++)); do
	out=$(q +tcp -b "127.0.1.$i" a.example.test A)
	[ "$(status_of <<<"$out")" = NOERROR ] && answered=$((answered + 1))
done
is "$answered" 41 "busy: 41 other clients at the limit are all answered"
clients_stop
stop_dotproxyd
is "$?" 0 "busy: SIGTERM exits 0"
