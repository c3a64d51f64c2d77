#!/bin/bash
# Prometheus metrics over HTTP: metrics listen on ADDRESS [port NUMBER].
# The text of dotproxyctl metrics at GET /metrics, errors for the rest,
# the access list, the connection limit and the read deadline, the
# socket following reloads, and bad configs refused.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss curl
need_dotproxyd
[ -x "$DOTPROXYCTL" ] || skip_all "$DOTPROXYCTL not built"
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 41

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
MPORT=$(free_port)
MPORT2=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock

# write_conf [EXTRA LINES...]: the config CONF_FILE, make_conf's with
# more statements (from line 8 on), on the same port each time.
write_conf()
{
	make_conf metrics -u "$UPORT" "$@"
	D_PORT=$PORT
}

# fails_with DESC ERE DOTPROXYD-ARGS...: dotproxyd with these arguments
# and -f CONF_FILE exits with an error, saying ERE.
fails_with()
{
	local desc=$1 ere=$2 rc
	shift 2
	timeout -k 1 10 "$DOTPROXYD" "$@" -f "$CONF_FILE" >"$T_DIR/err" 2>&1 \
	    </dev/null
	rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] &&
	    grep -Eq -- "$ere" "$T_DIR/err"; then
		pass "$desc"
	else
		fail "$desc"
		diag "exit status $rc"
		diag_file "$T_DIR/err"
	fi
}

# check_bad NAME LINE TEXT...: dotproxyd -n rejects a config ending in
# the lines TEXT, naming the file and LINE.
check_bad()
{
	local name=$1 line=$2
	shift 2
	write_conf "$@"
	fails_with "-n rejects $name, at line $line" "metrics\.conf:$line:" -n
}

# get PORT PATH [CURL ARGS...]: "CODE CONTENT-TYPE" of a request, the
# body in $T_DIR/body, the head in $T_DIR/head.
get()
{
	local port=$1 path=$2
	shift 2
	curl -sS --max-time 10 -o "$T_DIR/body" -D "$T_DIR/head" \
	    -w '%{http_code} %{content_type}' "$@" \
	    "http://127.0.0.1:$port$path" 2>"$T_DIR/curl.err"
}

# slow_clients PORT N OUT [TEXT]: N connections of which the first
# sends TEXT (by default half a request) and the others nothing; for
# each, in order, its answer's status (or "none") and the seconds it
# stayed open, in OUT.  "open" is the first line of OUT once all are
# connected.
slow_clients()
{
	perl -MIO::Socket::IP -MTime::HiRes=time -e '
		my ($port, $n, $text) = @ARGV;
		$| = 1;
		alarm 20;
		my @s;
		for (1 .. $n) {
			push @s, IO::Socket::IP->new(PeerHost => "127.0.0.1",
			    PeerPort => $port) or die "connect: $@\n";
		}
		my $t0 = time;
		$s[0]->syswrite($text =~ s/\\r\\n/\r\n/gr);
		print "open\n";
		for my $s (@s) {
			my ($buf, $b) = ("");
			$buf .= $b while sysread($s, $b, 4096);
			my $st = $buf =~ m{^HTTP/1\.1 (\d+)} ? $1 : "none";
			printf "%s %.1f\n", $st, time - $t0;
		}
	' "$1" "$2" "${4:-GET /metr}" >"$3" 2>&1
}

# --- bad configs ------------------------------------------------------

check_bad "a bad metrics address" 8 "metrics listen on 300.1.1.1"
check_bad "a metrics host name" 8 "metrics listen on localhost"
check_bad "metrics port 0" 8 "metrics listen on 127.0.0.1 port 0"
check_bad "metrics port 65536" 8 "metrics listen on 127.0.0.1 port 65536"
check_bad "a second metrics statement" 9 "metrics listen on 127.0.0.1" \
    "metrics listen on 127.0.0.1 port 9999"

write_conf "metrics listen on ::1"
like "$("$DOTPROXYD" -nv -f "$CONF_FILE" 2>&1)" 'metrics listen on ::1
' "-nv prints the statement, without the default port"

# an address that cannot be bound is fatal at start-up
write_conf "metrics listen on 192.0.2.1 port $MPORT"
fails_with "an address that cannot be bound is fatal at start-up" \
    "cannot listen on tcp 192\.0\.2\.1" -d

# --- serving ----------------------------------------------------------

start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"
write_conf "metrics listen on 127.0.0.1 port $MPORT"
start_dotproxyd "$CONF_FILE" || bail_out "cannot start dotproxyd"
pass "dotproxyd starts with a metrics listener"
q a.example.test A >/dev/null

r=$(get "$MPORT" /metrics)
is "$r" "200 text/plain; version=0.0.4; charset=utf-8" \
    "GET /metrics: 200, the Prometheus text format" ||
    diag_file "$T_DIR/curl.err"
like "$(cat "$T_DIR/body")" '# TYPE dotproxyd_queries_total counter' \
    "the body has the metrics"
like "$(cat "$T_DIR/body")" 'dotproxyd_upstream_up\{upstream="[^"]+"\} 1' \
    "with the upstream process's part"
ok "Connection: close" grep -qi '^connection: close' "$T_DIR/head"
like "$(ctl metrics)" 'dotproxyd_http_requests_total [1-9]' \
    "dotproxyctl metrics counts the HTTP request"
same=$(diff <(grep -v '^dotproxyd_http_' "$T_DIR/body" | cut -d' ' -f1) \
    <(ctl metrics | grep -v '^dotproxyd_http_' | cut -d' ' -f1) && echo yes)
is "$same" yes "the same metrics as dotproxyctl metrics"

r=$(get "$MPORT" /metrics?x=1)
is "${r%% *}" 200 "a query string is ignored"
r=$(get "$MPORT" /metrics -I)
is "${r%% *}" 200 "HEAD /metrics: 200"
unlike "$(cat "$T_DIR/body")" '# TYPE' "HEAD: no body"
r=$(get "$MPORT" /)
is "${r%% *}" 404 "GET /: 404"
r=$(get "$MPORT" /metricsx)
is "${r%% *}" 404 "GET /metricsx: 404"
r=$(get "$MPORT" /metrics -X POST)
is "${r%% *}" 405 "POST /metrics: 405"
ok "405 says Allow: GET, HEAD" grep -qi '^allow: GET, HEAD' "$T_DIR/head"
slow_clients "$MPORT" 1 "$T_DIR/bad" 'GARBAGE\r\n\r\n'
is "$(sed -n 2p "$T_DIR/bad" | cut -d' ' -f1)" 400 "a malformed request: 400"

# eight at a time; those that send no whole request are cut off
slow_clients "$MPORT" 8 "$T_DIR/slow" &
slow=$!
wait_for 50 grep -q open "$T_DIR/slow"
sleep 0.3
r=$(get "$MPORT" /metrics)
is "${r%% *}" 503 "a ninth connection at a time: 503"
wait "$slow"
n408=$(grep -c '^408 ' "$T_DIR/slow")
is "$n408" 8 "slow clients are told 408" || diag_file "$T_DIR/slow"
late=$(awk 'NR > 1 && ($2 < 4 || $2 > 8) { n++ } END { print n + 0 }' \
    "$T_DIR/slow")
is "$late" 0 "after the 5 s deadline, not before or much later"
r=$(get "$MPORT" /metrics)
is "${r%% *}" 200 "then the next scrape is served"

# --- reload -----------------------------------------------------------

write_conf "metrics listen on 127.0.0.1 port $MPORT2"
like "$(ctl reload)" reloaded "reload: the metrics listener moves"
wait_for 30 port_listening "$MPORT2"
r=$(get "$MPORT2" /metrics)
is "${r%% *}" 200 "reload: the new port serves"
wait_for 30 sh -c "! ss -Htln '( sport = :$MPORT )' | grep -q ."
not_ok "reload: the old port is closed" port_listening "$MPORT"

# ::1 is outside the access list (127.0.0.0/8): refused at once
write_conf "metrics listen on ::1 port $MPORT"
like "$(ctl reload)" reloaded "reload: the metrics listener on ::1"
wait_for 30 port_listening "$MPORT"
r=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
    "http://[::1]:$MPORT/metrics" 2>/dev/null)
is "$r" 000 "a client outside the access list gets nothing"
like "$(ctl metrics)" 'dotproxyd_http_refused_total [1-9]' "and is counted"

write_conf
like "$(ctl reload)" reloaded "reload: the metrics listener goes"
wait_for 30 sh -c "! ss -Htln '( sport = :$MPORT )' | grep -q ."
not_ok "reload: nothing listens for metrics on ::1" port_listening "$MPORT"
wait_for 30 sh -c "! ss -Htln '( sport = :$MPORT2 )' | grep -q ."
not_ok "reload: nothing listens for metrics" port_listening "$MPORT2"

write_conf "metrics listen on 192.0.2.1 port $MPORT"
like "$(ctl reload)" reloaded "reload: an address that cannot be bound"
ok "reload: is a warning" log_wait "cannot listen on tcp 192\.0\.2\.1"

write_conf "metrics listen on 127.0.0.1 port $MPORT"
like "$(ctl reload)" reloaded "reload: the metrics listener comes back"
r=$(get "$MPORT" /metrics)
is "${r%% *}" 200 "reload: served again"

ok "the daemon is alive after all this" alive "$D_PID"
is "$(q a.example.test A | status_of)" NOERROR "and answers queries"
