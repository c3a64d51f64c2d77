#!/bin/sh
# Install what dotproxyd needs and is missing.
#   deps.sh build   compiler, bison, pkg-config, protoc-c and the libraries
#   deps.sh run     build, plus the system user and the chroot directory
#   deps.sh test    build, plus what the test suites use
# Debian and derivatives use apt-get; OpenBSD has libtls and libevent in
# base and needs only the test tools.
set -eu

what=${1:-build}
build_pkgs="build-essential pkg-config bison libtls-dev libseccomp-dev \
libcap-ng-dev libevent-dev libbsd-dev libmd-dev libssl-dev ca-certificates \
libfstrm-dev libprotobuf-c-dev protobuf-c-compiler"
test_pkgs="unbound knot-dnsutils dnsperf openssl perl clang \
libclang-rt-14-dev mandoc iproute2 procps python3-yaml debhelper \
dpkg-dev lintian fakeroot shellcheck yamllint systemd valgrind \
fstrm-bin dnstap-ldns curl"

case "$what" in
build|run)	pkgs=$build_pkgs ;;
test)		pkgs="$build_pkgs $test_pkgs" ;;
*)		echo "usage: deps.sh build | run | test" >&2; exit 1 ;;
esac

if [ "$(uname -s)" = OpenBSD ]; then
	[ "$what" = test ] && pkg_add -I unbound knot dnsperf p5-Test-Harness curl
	missing=""
elif command -v apt-get >/dev/null 2>&1; then
	missing=""
	for p in $pkgs; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null |
		    grep -q 'install ok installed' || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		[ "$(id -u)" = 0 ] || {
			echo "deps.sh: missing packages:$missing;" \
			    "run as root to install them" >&2
			exit 1
		}
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $missing
	fi
else
	echo "deps.sh: no apt-get here; install by hand: $pkgs" >&2
fi

if [ "$what" = run ]; then
	if ! id _dotproxyd >/dev/null 2>&1; then
		if command -v useradd >/dev/null 2>&1; then
			useradd --system --no-create-home --home-dir /var/empty \
			    --shell /usr/sbin/nologin _dotproxyd
		else
			echo "deps.sh: create the user _dotproxyd" >&2
			exit 1
		fi
	fi
	[ -d /var/empty ] || install -d -m 0755 -o root /var/empty
fi
exit 0
