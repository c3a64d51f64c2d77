#!/bin/bash
# The query log: a name is escaped once (DNS presentation format, \DDD)
# however many processes the line passes; a name of 255 bytes is cut, not
# the fields before it; "anonymize" writes the /24 and a 64-bit keyed hash.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd "$KDIG" "$UNBOUND" openssl perl ss pgrep
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 10

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"
UPORT=$(free_port)
start_unbound "$T_DIR/ca" "$UPORT" || bail_out "cannot start unbound"

# query_line ERE: the last query log line matching ERE.
query_line()
{
	log_wait "query .*$1" >/dev/null
	last_log | grep -E -- "query .*$1" | tail -n 1
}

# hash_of LINE: the hash after '#' in an anonymized line.
hash_of()
{
	sed -E -n 's/.*#([0-9a-f]{16}) .*/\1/p' <<<"$1"
}

make_conf plain -u "$UPORT" -a 127.0.0.1/32 "log queries"
start_dotproxyd "$CONF_FILE" ||
    bail_out "cannot start the daemon"

# a quote, a backslash, a newline and bytes 1 and 127 in the first label
q 'quo"te\092x\010y\001\127.example.test' A >/dev/null
line=$(query_line 'example\.test\.$')
like "$line" \
    'query 127\.0\.0\.1 udp type 1 [A-Z]+ upstream [0-9]+us quo\\034te\\092x\\010y\\001\\127\.example\.test\.$' \
    "quote, backslash and control bytes: escaped once, fixed fields first" ||
    diag "$line"
unlike "$line" '\\134' "no escaped backslash (\\134): nothing escaped twice"

# 255 bytes on the wire, each of its 250 label bytes escaped: 1,004
# characters of name
l63=$(printf '\\001%.0s' $(seq 63))
l61=$(printf '\\001%.0s' $(seq 61))
q +noidn "$l63.$l63.$l63.$l61" A >/dev/null
line=$(query_line '(\\001)+\.\.\.$')
like "$line" \
    'query 127\.0\.0\.1 udp type 1 [A-Z]+ upstream [0-9]+us (\\001)+' \
    "255-byte name: client, type, rcode, source and time all on the line" ||
    diag "$line"
like "$line" 'us ((\\001){63}\.){3}(\\001)*\.\.\.$' \
    "255-byte name: cut at its end, marked with ..." || diag "$line"
ok "255-byte name: the line is under 1024 bytes (${#line})" \
    test "${#line}" -gt 800 -a "${#line}" -lt 1024
like "$line" '\\001\.?\.\.\.$' \
    "255-byte name: not cut inside an escape" || diag "$line"
stop_dotproxyd

make_conf anon -u "$UPORT" -a 127.0.0.1/32 "log queries anonymize"
start_dotproxyd "$CONF_FILE" ||
    bail_out "cannot start the daemon"
q a.example.test A >/dev/null
line=$(query_line 'a\.example\.test\.$')
like "$line" 'query 127\.0\.0\.0/24#[0-9a-f]{16} udp type 1 NOERROR ' \
    "anonymize: the /24 and 16 hex digits of keyed hash" || diag "$line"
h1=$(hash_of "$line")
q a.example.test A >/dev/null
log_wait 'NOERROR cache .*a\.example\.test\.$' >/dev/null
line=$(query_line 'cache .*a\.example\.test\.$')
is "$(hash_of "$line")" "$h1" "anonymize: one client, one hash in a run"
stop_dotproxyd

start_dotproxyd "$CONF_FILE" ||
    bail_out "cannot start the daemon again"
q a.example.test A >/dev/null
line=$(query_line 'a\.example\.test\.$')
h2=$(hash_of "$line")
ok "anonymize: a new key at each start ($h1, then $h2)" \
    test -n "$h1" -a -n "$h2" -a "$h1" != "$h2"
unlike "$(last_log | grep ' query ')" '127\.0\.0\.1' \
    "anonymize: the address is not in the query log"
stop_dotproxyd
done_testing
