#!/bin/bash
# Operations: dotproxyctl (status, stats, metrics, reload, flush, log),
# who may use the control socket, reloading on SIGHUP and the audit log.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep setpriv
need_dotproxyd
[ -x "$DOTPROXYCTL" ] || skip_all "$DOTPROXYCTL not built"
ensure_user || bail_out "cannot create the daemon's user or chroot"
perl -MJSON::PP -e 1 2>/dev/null || skip_all "perl JSON::PP not found"

plan 76

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
NEWPORT=$(free_port)
CTL_SOCK=$T_DIR/ctl.sock
AUDIT=$T_DIR/audit.log
CONF=$T_DIR/dotproxyd.conf	# what make_conf dotproxyd writes
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# stat_value NAME: a value of `dotproxyctl stats`, by its label.
stat_value()
{
	ctl stats 2>/dev/null | awk -v k="$1" '
		{ v = $NF; $NF = ""; sub(/^ +/, ""); sub(/ +$/, "") }
		$0 == k { print v; exit }'
}

# status_from ADDR: the rcode of a query for a.example.test from ADDR.
status_from()
{
	q -b "$1" a.example.test A | status_of
}

# as_group_member ARGS...: dotproxyctl as nobody, in the daemon's group.
DGID=$(getent group "$D_USER" | cut -d: -f3)
as_group_member()
{
	setpriv --reuid=nobody --regid="$DGID" --clear-groups \
	    timeout -k 1 15 "$DOTPROXYCTL" -s "$CTL_SOCK" "$@"
}

start_conf dotproxyd \
    -d "dotproxyd starts with a control socket and an audit log" \
    -u "$UPORT" -a 127.0.0.1/32
PARENT=$D_PID
LPID=$(child_named "$D_PID" listener)

# ---------------------------------------------------------------------
# The control socket

ok "the control socket exists" test -S "$CTL_SOCK"
is "$(stat -c '%a %U %G' "$CTL_SOCK" 2>&1)" "660 root $D_USER" \
    "the control socket is mode 0660, root:$D_USER"

out=$(ctl status 2>&1)
is "$?" 0 "status: exits 0" || diag "$out"
like "$out" "127\.0\.0\.1:$UPORT \(dot\.test\) +up " \
    "status: lists the upstream, state up" || diag "$out"
like "$out" 'TLSv1\.3' "status: the upstream connection uses TLSv1.3" ||
    diag "$out"

before=$(stat_value udp)
for n in a b c; do
	q "$n.example.test" A >/dev/null
done
after=$(stat_value udp)
ok "stats: UDP queries counted ($before, then $after after three more)" \
    test "${after:-0}" -ge $(( ${before:-999999} + 3 ))
tcp=$(stat_value tcp)
q +tcp a.example.test A >/dev/null
ok "stats: TCP queries counted" test "$(stat_value tcp)" -ge $(( ${tcp:-999999} + 1 ))
ok "stats: answers by rcode (NOERROR)" test "$(stat_value NOERROR)" -ge 4

metrics=$(ctl metrics 2>&1)
is "$?" 0 "metrics: exits 0"
bad=$(grep -v '^#' <<<"$metrics" | grep -Ev '^[a-z_]+(\{[^}]*\})? [0-9]+$')
is "$bad" "" "metrics: every sample line is name{labels} value"
missing=$(perl -e '
	my (%help, %type, %seen);
	while (<STDIN>) {
		chomp;
		if (/^# HELP (\S+) \S/) { $help{$1} = 1; next }
		if (/^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/) {
			$type{$1} = 1; next
		}
		next if /^#/ || /^$/;
		/^([a-z_]+)/ and $seen{$1} = 1;
	}
	for (sort keys %seen) {
		print "$_ (no HELP)\n" unless $help{$_};
		print "$_ (no TYPE)\n" unless $type{$_};
	}
' <<<"$metrics")
is "$missing" "" "metrics: every metric has # HELP and # TYPE lines"
like "$metrics" '^dotproxyd_queries_total\{protocol="udp"\} [1-9]' \
    "metrics: the UDP query counter is not zero"
like "$metrics" "dotproxyd_upstream_up\{upstream=\"127\.0\.0\.1:$UPORT \(dot\.test\)\"\} 1" \
    "metrics: the upstream is up"

# ---------------------------------------------------------------------
# Who may do what

out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
    timeout -k 1 15 "$DOTPROXYCTL" -s "$CTL_SOCK" stats 2>&1)
rc=$?
ok "a user outside the group cannot use the socket (exit $rc)" test "$rc" -ne 0
unlike "$out" 'queries' "a user outside the group sees no statistics"

out=$(as_group_member stats 2>&1)
is "$?" 0 "a member of the group may read stats" || diag "$out"
like "$out" 'cache hits' "a member of the group gets the statistics"
out=$(as_group_member reload 2>&1)
rc=$?
ok "a member of the group may not reload (exit $rc)" test "$rc" -ne 0
like "$out" 'permission denied' "reload by a member of the group: permission denied"
out=$(as_group_member flush 2>&1)
rc=$?
ok "a member of the group may not flush (exit $rc)" test "$rc" -ne 0
out=$(as_group_member log verbose 2>&1)
rc=$?
ok "a member of the group may not change logging (exit $rc)" test "$rc" -ne 0

# ---------------------------------------------------------------------
# Members of the group cannot lock root out, or flood the audit trail

# hold_ctl UID N: as UID in the daemon's group, open N control
# connections at once, print how many the daemon kept open after 0.5 s,
# then hold them for 3 s.
hold_ctl()
{
	setpriv --reuid="$1" --regid="$DGID" --clear-groups perl \
	    -MIO::Socket::UNIX -MIO::Select -e '
		my ($path, $n) = @ARGV;
		my @s;
		for (1 .. $n) {
			my $c = IO::Socket::UNIX->new(Peer => $path) or next;
			push @s, $c;
		}
		select(undef, undef, undef, 0.5);
		# one the daemon refused is closed: readable at once
		my $open = grep { !IO::Select->new($_)->can_read(0) } @s;
		$| = 1;
		print "$open\n";
		sleep 3;
	' "$CTL_SOCK" "$2"
}

# all_held: every holder has said how many it holds
all_held()
{
	local u
	for u in 65534 61001 61002 61003; do
		[ -s "$T_DIR/held-$u" ] || return 1
	done
}

for u in 65534 61001 61002 61003; do
	hold_ctl "$u" 5 >"$T_DIR/held-$u" 2>"$T_DIR/held-$u.err" &
	holders[u]=$!
done
wait_for 50 all_held
held=$(cat "$T_DIR"/held-[0-9]*[0-9] | tr '\n' ' ')
total=0
most=0
for n in $held; do
	total=$((total + n))
	[ "$n" -gt "$most" ] && most=$n
done
ok "group members: no user holds more than 4 connections ($held)" \
    test "$most" -le 4
is "$total" 14 "group members: together they hold 14 of the 16 connections"
out=$(ctl status 2>&1)
is "$?" 0 "group members holding all they may: root still gets status" ||
    diag "$out"
out=$(as_group_member stats 2>&1)
rc=$?
ok "group members holding all they may: one more is refused (exit $rc)" \
    test "$rc" -ne 0
like "$out" 'too many control connections|closed the connection|reset' \
    "group members holding all they may: dotproxyctl says why" || diag "$out"
for u in 65534 61001 61002 61003; do
	wait "${holders[u]}" 2>/dev/null
done
out=$(as_group_member stats 2>&1)
is "$?" 0 "once they let go, a member of the group may read stats again" ||
    diag "$out"

# uid_commands UID ERE: control records of UID with a command matching ERE
uid_commands()
{
	U=$1 C=$2 perl -MJSON::PP -ne '
		my $o = eval { decode_json($_) } or next;
		$n++ if $o->{event} eq "control" && $o->{uid} eq $ENV{U} &&
		    $o->{command} =~ /^(?:$ENV{C})$/;
		END { print $n // 0, "\n" }
	' "$AUDIT"
}

for ((i = 0; i < 25; i++)); do
	as_group_member stats >/dev/null 2>&1
	as_group_member reload >/dev/null 2>&1
done
n=$(uid_commands 65534 'stats|status|metrics')
ok "25 stats of a member: at most 10 read-only commands audited ($n)" \
    test "$n" -le 10
n=$(uid_commands 65534 'reload|flush|log .*')
ok "25 refused reloads of a member: at most 10 refused commands audited ($n)" \
    test "$n" -le 10

# ---------------------------------------------------------------------
# Reload on SIGHUP

is "$(status_from 127.0.0.2)" REFUSED "before the reload: 127.0.0.2 is REFUSED"
make_conf dotproxyd -u "$UPORT" -a 127.0.0.1/32 -a 127.0.0.0/8
kill -HUP "$PARENT"
if wait_for 50 eval '[ "$(status_from 127.0.0.2)" = NOERROR ]'; then
	pass "SIGHUP: the new access list applies (127.0.0.2 answered)"
else
	fail "SIGHUP: the new access list applies (127.0.0.2 answered)"
	diag_file "$D_LOG" 20
fi
ok "SIGHUP: the parent is the same process" alive "$PARENT"
is "$(child_named "$PARENT" listener)" "$LPID" \
    "SIGHUP: the listener is the same process"

# ---------------------------------------------------------------------
# dotproxyctl reload

cp "$CONF" "$T_DIR/good.conf"
printf 'allow from 127.0.0.1/32\nthis is not a statement\n' >>"$CONF"
out=$(ctl reload 2>&1)
rc=$?
ok "reload of a broken file exits non-zero (exit $rc)" test "$rc" -ne 0
like "$out" 'error' "reload of a broken file prints an error" || diag "$out"
is "$(status_from 127.0.0.2)" NOERROR \
    "after the rejected reload: the running config stays (127.0.0.2 answered)"
ok "after the rejected reload: the parent is alive" alive "$PARENT"

cp "$T_DIR/good.conf" "$CONF"
echo "listen on 127.0.0.1 port $NEWPORT" >>"$CONF"
out=$(ctl reload 2>&1)
is "$?" 0 "reload adding a listen statement exits 0" || diag "$out"
like "$out" 'reloaded' "reload says it reloaded" || diag "$out"
if wait_for 30 eval '[ "$(D_PORT=$NEWPORT q b.example.test A | status_of)" = NOERROR ]'; then
	pass "after the reload: the new port $NEWPORT answers"
else
	fail "after the reload: the new port $NEWPORT answers"
	diag_file "$D_LOG" 20
fi
out=$(D_PORT=$NEWPORT q +tcp b.example.test A)
is "$(rdata_of A <<<"$out")" 192.0.2.2 "after the reload: TCP on the new port answers" ||
    diag "$out"
is "$(q c.example.test A | status_of)" NOERROR "after the reload: the old port still answers"

# ---------------------------------------------------------------------
# flush, log

q a.example.test A >/dev/null
ok "the cache holds entries before a flush" test "$(stat_value 'cache entries')" -gt 0
out=$(ctl flush 2>&1)
is "$?" 0 "flush exits 0" || diag "$out"
is "$(stat_value 'cache entries')" 0 "after a flush the cache is empty"

out=$(ctl log verbose 2>&1)
is "$?:$out" "0:logging verbose" "log verbose succeeds"
ok "log verbose: the daemon logs it" log_wait 'logging verbose'
out=$(ctl log brief 2>&1)
is "$?:$out" "0:logging brief" "log brief succeeds"
ok "log brief: the daemon logs it" log_wait 'logging brief'

# ---------------------------------------------------------------------
# An audit log that became a FIFO is refused on reload, not waited for

# reloads_in FILE: the accepted reloads recorded in FILE
reloads_in()
{
	grep -c '"event":"reload".*"result":"accepted"' "$1"
}

mv "$AUDIT" "$AUDIT.1"
mkfifo "$AUDIT"
before=$(reloads_in "$AUDIT.1")
kill -HUP "$PARENT"
ok "audit log a FIFO, no reader: SIGHUP logs that it is refused" \
    log_wait 'audit log .*: No such device or address; still writing to the file open before'
out=$(ctl reload 2>&1)
is "$?:$out" "0:reloaded $CONF" \
    "audit log a FIFO: the parent still answers a reload" || diag "$out"
spawn "$T_DIR/fifo-reader.log" perl -MFcntl -e '
	sysopen(my $f, $ARGV[0], O_RDONLY | O_NONBLOCK) or die "$!\n";
	sleep 30;
' "$AUDIT"
READER=$SPAWNED_PID
sleep 0.3
out=$(ctl reload 2>&1)
is "$?:$out" "0:reloaded $CONF" \
    "audit log a FIFO with a reader: the parent still answers a reload" ||
    diag "$out"
ok "audit log a FIFO with a reader: refused, not a regular file" \
    log_wait 'audit log .*: not a regular file'
ok "audit log a FIFO: the daemon answers queries" \
    test "$(q a.example.test A | status_of)" = NOERROR
after=$(reloads_in "$AUDIT.1")
ok "audit log a FIFO: the records go on in the file open before ($before, then $after)" \
    test "$after" -ge $((before + 3))
kill_tree "$READER"
rm -f "$AUDIT"
mv "$AUDIT.1" "$AUDIT"
out=$(ctl reload 2>&1)
is "$?" 0 "the audit log back: reload" || diag "$out"

# the counts of what the audit left out, at the end of its minute
suppressed()
{
	K=$1 perl -MJSON::PP -ne '
		my $o = eval { decode_json($_) } or next;
		$n += $o->{commands} if $o->{event} eq "control-suppressed" &&
		    $o->{kind} eq $ENV{K} && $o->{period} eq "60s";
		END { exit !($n >= 15) }
	' "$AUDIT"
}
ok "what went unaudited is counted: read-only (waits for the minute's end)" \
    wait_for 700 suppressed read-only
ok "what went unaudited is counted: refused" suppressed refused

# ---------------------------------------------------------------------
# The audit log

stop_dotproxyd
is "$?" 0 "SIGTERM: dotproxyd exits 0"

events=$(audit_check "$AUDIT" 2>&1)
ok "the audit log is JSON, one object a line" audit_check "$AUDIT"
like "$(head -n 1 <<<"$events")" '^start$' "audit: the first event is start"
is "$(grep -c '^confined$' <<<"$events")" 2 "audit: two confined events"
like "$events" '^control$' "audit: control commands are recorded"
results=$(perl -MJSON::PP -ne '
	my $o = eval { decode_json($_) } or next;
	print "$o->{result}\n" if $o->{event} eq "reload";
' "$AUDIT" | sort -u | tr '\n' ' ')
like "$results" 'accepted' "audit: an accepted reload" || diag "$events"
like "$results" 'rejected' "audit: a rejected reload"
is "$(tail -n 1 <<<"$events")" stop "audit: the last event is stop"

# ---------------------------------------------------------------------
# A config path over 1 KB: reload answers, truncated, and nothing dies

long=$T_DIR
for i in 1 2 3 4 5 6; do
	long=$long/$(printf 'd%.0s' $(seq 200))$i
done
mkdir -p "$long"
cp "$CONF" "$long/dotproxyd.conf"
if start_dotproxyd "$long/dotproxyd.conf"; then
	pass "a config path of ${#long} bytes: dotproxyd starts"
else
	fail "a config path of ${#long} bytes: dotproxyd starts"
fi
PARENT=$D_PID
LPID=$(child_named "$D_PID" listener)
out=$(ctl reload 2>&1)
is "$?" 0 "long config path: dotproxyctl reload exits 0" || diag "$out"
like "$out" '^reloaded /.* \[truncated\]$' \
    "long config path: the answer is cut, with a marker" || diag "$out"
ok "long config path: the answer is under 1024 bytes (${#out})" \
    test "${#out}" -lt 1024
out=$(ctl reload 2>&1)
is "$?" 0 "long config path: a second reload too" || diag "$out"
is "$(child_named "$PARENT" listener)" "$LPID" \
    "long config path: the listener is the same process"
is "$(q a.example.test A | status_of)" NOERROR \
    "long config path: the daemon answers"
CF="$long/dotproxyd.conf" perl -MJSON::PP -ne '
	my $o = eval { decode_json($_) } or next;
	$n++ if $o->{event} eq "reload" && $o->{config} eq $ENV{CF} &&
	    $o->{config_hash} =~ /^[0-9a-f]{16}$/;
	END { exit !($n >= 2) }
' "$AUDIT"
is "$?" 0 "long config path: the reload records hold the path and the hash"
stop_dotproxyd
is "$?" 0 "long config path: SIGTERM exits 0"
