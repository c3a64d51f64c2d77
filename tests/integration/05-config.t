#!/bin/bash
# Configuration checking: dotproxyd -n.

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

need_root
need_cmd openssl setpriv
need_dotproxyd
ensure_user || bail_out "cannot create the daemon's user or chroot"

plan 9

make_ca "$T_DIR/ca" dot.test || bail_out "cannot make certificates"

# a complete, valid configuration, listening on PORT
make_conf good -l ::1 -u 8853 -a 127.0.0.0/8 -a ::1/128

# line 3 holds a statement the grammar does not know
cat >"$T_DIR/bad.conf" <<EOF
listen on 127.0.0.1 port $PORT
upstream 127.0.0.1 port 8853 name "dot.test"
frobnicate yes
tls ca "$T_DIR/ca/ca.pem"
EOF

# an upstream with neither an authentication name nor a pin
cat >"$T_DIR/noname.conf" <<EOF
listen on 127.0.0.1 port $PORT
upstream 127.0.0.1 port 8853
tls ca "$T_DIR/ca/ca.pem"
EOF

# check CONF [RUNNER...]: dotproxyd -n -f CONF; stderr in $T_DIR/err,
# exit status in $rc.
check()
{
	local conf=$1
	shift
	timeout -k 1 10 "$@" "$DOTPROXYD" -n -f "$conf" \
	    >"$T_DIR/out" 2>"$T_DIR/err" </dev/null
	rc=$?
}

check "$T_DIR/good.conf"
is "$rc" 0 "-n accepts a valid configuration" || diag_file "$T_DIR/err"

check "$T_DIR/bad.conf"
isnt "$rc" 0 "-n rejects an unknown statement"
isnt "$rc" 124 "-n returns instead of hanging on a bad configuration"
like "$(cat "$T_DIR/err")" 'bad\.conf:3:' \
    "the error names the file and line: bad.conf:3:"

check "$T_DIR/noname.conf"
isnt "$rc" 0 "-n rejects an upstream without name or pin"
like "$(cat "$T_DIR/err")" '[^[:space:]]' "and says why on stderr"

# The parent parses the configuration before it needs root, so -n works
# for anyone who can read the file.
check "$T_DIR/good.conf" setpriv --reuid=nobody --regid=nogroup --clear-groups
is "$rc" 0 "-n works as an unprivileged user" || diag_file "$T_DIR/err"

check "$T_DIR/bad.conf" setpriv --reuid=nobody --regid=nogroup --clear-groups
isnt "$rc" 0 "-n as an unprivileged user still rejects a bad configuration"

# -n only checks: nothing is left listening on the configured port.
check "$T_DIR/good.conf"
is "$(ss -Hlntu "( sport = :$PORT )" | wc -l | tr -d ' ')" 0 \
    "-n leaves nothing listening"
