# shellcheck shell=bash
# Helpers shared by the integration tests (tests/integration/lib.sh) and
# the benchmark (tests/bench/bench.sh): processes, ports, certificates.
# Sourced, not run.

# alive PID: the process exists and is not a zombie.
alive()
{
	local state
	[ -r "/proc/$1/stat" ] || return 1
	state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# descendants PID: every descendant of PID, one a line.
descendants()
{
	local c
	for c in $(pgrep -P "$1" 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}

# wait_gone TENTHS PID...: wait at most TENTHS/10 seconds for the
# processes to go away.  Returns 0 when all are gone.
wait_gone()
{
	local tenths=$1 p left i
	shift
	for ((i = 0; i < tenths; i++)); do
		left=0
		for p in "$@"; do
			alive "$p" && left=1
		done
		[ "$left" -eq 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# kill_tree PID: SIGTERM the process, its group and its descendants,
# SIGKILL whatever is left after 5 seconds, then reap it.
kill_tree()
{
	local pid=$1 all
	all="$pid $(descendants "$pid")"
	# shellcheck disable=SC2086
	kill -TERM -- "-$pid" $all 2>/dev/null
	# shellcheck disable=SC2086
	if ! wait_gone 50 $all; then
		# shellcheck disable=SC2086
		kill -KILL -- "-$pid" $all 2>/dev/null
		# shellcheck disable=SC2086
		wait_gone 20 $all
	fi
	wait "$pid" 2>/dev/null
	return 0
}

_used_ports=" "

# free_port: print a loopback port free for both TCP and UDP.  Ports
# come from below the kernel's ephemeral range, so that no outgoing
# connection of the processes under test can take one meanwhile.
free_port()
{
	local lo hi p i
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null ||
		lo=32768
	hi=$((lo - 1))
	[ "$hi" -gt 20000 ] || hi=60000
	for ((i = 0; i < 200; i++)); do
		p=$(( (RANDOM << 15 | RANDOM) % (hi - 20000 + 1) + 20000 ))
		case $_used_ports in *" $p "*) continue ;; esac
		if [ -z "$(ss -Hantu "( sport = :$p )" 2>/dev/null)" ]; then
			_used_ports="$_used_ports$p "
			echo "$p"
			return 0
		fi
	done
	echo "free_port: no free port found" >&2
	return 1
}

# make_ca DIR NAME [CN]: a throwaway CA (DIR/ca.pem, DIR/ca.key), named
# CN (by default one name per NAME and test), and a server key and
# certificate for NAME signed by it (DIR/server.key, DIR/server.pem)
# with subjectAltName DNS:NAME, IP:127.0.0.1, IP:::1.  NAME is saved in
# DIR/name.
make_ca()
{
	local dir=$1 name=$2 cn=${3:-"dotproxyd test CA $2 $$"}
	mkdir -p "$dir" || return 1
	echo "$name" >"$dir/name"
	cat >"$dir/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:$name, IP:127.0.0.1, IP:::1
EOF
	{
		openssl req -x509 -new -newkey ec \
		    -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		    -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 2 \
		    -subj "/CN=$cn" \
		    -addext "basicConstraints=critical,CA:TRUE" \
		    -addext "keyUsage=critical,keyCertSign,cRLSign" \
		    -addext "subjectKeyIdentifier=hash" &&
		openssl req -new -newkey ec \
		    -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		    -keyout "$dir/server.key" -out "$dir/server.csr" \
		    -subj "/CN=$name" &&
		openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" \
		    -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
		    -extfile "$dir/server.ext" -out "$dir/server.pem"
	} >"$dir/openssl.log" 2>&1 || {
		echo "make_ca $name failed:" >&2
		tail -n 20 "$dir/openssl.log" >&2
		return 1
	}
	chmod 0644 "$dir/ca.pem" "$dir/server.pem"
	return 0
}

# shellcheck disable=SC2034 # read by the sourcing script
created_user=0
created_chroot=0

# ensure_user: the daemon's system user ($D_USER) and chroot directory
# ($D_CHROOT).  What this creates is flagged in created_user and
# created_chroot, for the caller to remove at exit.  Returns 1 on failure.
ensure_user()
{
	if ! getent passwd "$D_USER" >/dev/null; then
		useradd --system --no-create-home --home-dir "$D_CHROOT" \
		    --shell /usr/sbin/nologin "$D_USER" || {
			echo "cannot create the user $D_USER" >&2
			return 1
		}
		# shellcheck disable=SC2034
		created_user=1
	fi
	if [ ! -d "$D_CHROOT" ]; then
		mkdir -m 0755 "$D_CHROOT" || {
			echo "cannot create $D_CHROOT" >&2
			return 1
		}
		# shellcheck disable=SC2034
		created_chroot=1
	fi
}

# unbound_server DIR PORT: the start of the server clause of an
# unbound.conf for a test instance kept in DIR, in the foreground, on
# 127.0.0.1@PORT, answering loopback only, resolving nothing itself.
unbound_server()
{
	cat <<EOF
server:
	verbosity: 1
	use-syslog: no
	logfile: ""
	do-daemonize: no
	chroot: ""
	username: ""
	directory: "$1"
	pidfile: "$1/unbound.pid"
	interface: 127.0.0.1@$2
	port: $2
	do-ip4: yes
	do-ip6: no
	do-udp: yes
	do-tcp: yes
	module-config: "iterator"
	trust-anchor-signaling: no
	root-key-sentinel: no
	access-control: 127.0.0.0/8 allow
EOF
}

# wait_dot PID PORT CA NAME QNAME: poll, for about 10 seconds at most,
# until the DNS-over-TLS server PID on 127.0.0.1 PORT, with a certificate
# for NAME from CA, answers an A query for QNAME with NOERROR.  Returns 1
# if it exits or does not answer.
wait_dot()
{
	local pid=$1 port=$2 ca=$3 name=$4 qname=$5 i
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || return 1
		if timeout -k 1 5 "${KDIG:-kdig}" +tls +tls-ca="$ca" \
		    +tls-hostname="$name" +time=1 +retry=0 @127.0.0.1 \
		    -p "$port" "$qname" A 2>/dev/null |
		    grep -q 'status: NOERROR'; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}
