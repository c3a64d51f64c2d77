#!/bin/bash
# Packaging and deployment files in contrib/: what can be checked on a
# Debian machine without systemd as PID 1, an OpenBSD host, a Docker
# engine or a Kubernetes cluster.
#
#   - OpenBSD: rc.d script syntax, the port's copy of it, PLIST and
#     Makefile fields;
#   - systemd: `systemd-analyze verify' of the unit, the tmpfiles.d and
#     sysusers.d entries applied to a scratch root;
#   - Kubernetes: the manifests parse and hang together;
#   - Docker: the Dockerfile's instructions;
#   - the example configurations pass `dotproxyd -n';
#   - `make install DESTDIR=... PREFIX=/usr' lays out the expected tree;
#   - the Debian package builds, passes lintian without errors and holds
#     the expected files.
#
# Checks whose tool is missing are skipped.  Packages used: dpkg-dev,
# debhelper, lintian, systemd, python3-yaml, shellcheck, yamllint.
#
# Environment: T_PACKAGING_DEB=0 skips the Debian package build (the
# slowest part, about a minute).

# Single quotes around ${...} and $MAINPID below are meant literally.
# shellcheck disable=SC2016

# The package build compiles the whole tree once more.
T_TIMEOUT=${T_TIMEOUT:-1200}

. "$(dirname "$0")/lib.sh"

C=$TOP/contrib
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------
# OpenBSD

RC=$C/openbsd/rc.d/dotproxyd
PORTRC=$C/openbsd/port/pkg/dotproxyd.rc

ok "rc.d script: sh -n" sh -n "$RC"
ok "port rc script: sh -n" sh -n "$PORTRC"
like "$(grep -c '^daemon="/usr/local/sbin/dotproxyd"$' "$RC")" '^1$' \
    "rc.d script: daemon path"
is "$(grep -cE '^\. /etc/rc\.d/rc\.subr$|^rc_cmd \$1$' "$RC")" 2 \
    "rc.d script: sources rc.subr and ends in rc_cmd"

# The port installs pkg/dotproxyd.rc; it must not drift from rc.d/.
# Only the daemon path and the install hint differ.
norm_rc()
{
	sed -e 's#^daemon=.*#daemon=#' -e '/^# Install/d' "$1"
}
is "$(norm_rc "$PORTRC")" "$(norm_rc "$RC")" \
    "port rc script matches rc.d/dotproxyd"

if have shellcheck; then
	# rc.subr sets daemon_flags and reads rc_reload_signal; `rc_cmd $1'
	# is the rc.d(8) idiom.
	ok "rc.d script: shellcheck" shellcheck -s ksh \
	    -e SC1091,SC2034,SC2086,SC2154 "$RC"
else
	skip 1 "shellcheck not installed"
fi

plist_ok()
{
	local f=$C/openbsd/port/pkg/PLIST e
	for e in '@newgroup _dotproxyd:' '@newuser _dotproxyd:' \
	    '@rcscript ${RCDIR}/dotproxyd' '@bin sbin/dotproxyd' \
	    '@bin sbin/dotproxyctl' '@bin libexec/dotproxyd-upstream' \
	    '@man man/man5/dotproxyd.conf.5' \
	    '@man man/man8/dotproxyd.8' '@man man/man8/dotproxyctl.8' \
	    '@man man/man8/dotproxyd-upstream.8' \
	    'share/examples/dotproxyd/dotproxyd.conf' \
	    '@sample ${SYSCONFDIR}/dotproxyd.conf'; do
		grep -qF -- "$e" "$f" || { echo "PLIST lacks: $e"; return 1; }
	done
}
ok "port PLIST lists users, rc script, binaries, man pages, sample" plist_ok

port_mk_ok()
{
	local f=$C/openbsd/port/Makefile v
	for v in COMMENT DISTNAME CATEGORIES WANTLIB PERMIT_PACKAGE; do
		grep -qE "^${v}[[:space:]]*\+?=" "$f" ||
		    { echo "Makefile lacks $v"; return 1; }
	done
	grep -qE '^CATEGORIES[[:space:]]*=[[:space:]]*net$' "$f" &&
	    grep -qE '^\.include <bsd\.port\.mk>$' "$f"
}
ok "port Makefile has the required variables" port_mk_ok
is "$(sed -n '1,/^$/p' "$C/openbsd/port/pkg/DESCR" | awk 'length > 80' |
    wc -l | tr -d ' ')" 0 "port DESCR lines fit in 80 columns"

# ---------------------------------------------------------------------
# systemd

UNIT=$C/systemd/dotproxyd.service

unit_ok()
{
	local e
	for e in 'Type=notify' 'WatchdogSec=' 'ExecStart=/usr/sbin/dotproxyd -d' \
	    'ExecStartPre=/usr/sbin/dotproxyd -n' \
	    'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' \
	    'ProtectSystem=strict' 'RuntimeDirectory=dotproxyd' \
	    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
	    'SystemCallArchitectures=native'; do
		grep -qF -- "$e" "$UNIT" || { echo "unit lacks: $e"; return 1; }
	done
	# What the parent keeps for itself (src/sandbox-seccomp.c); without
	# CAP_SETPCAP the children could not empty their bounding set.
	for e in CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_SYS_CHROOT \
	    CAP_SETPCAP CAP_KILL; do
		grep -E '^CapabilityBoundingSet=' "$UNIT" | grep -qw "$e" ||
		    { echo "bounding set lacks $e"; return 1; }
	done
	# The children start as root: the unit must not set User=.
	! grep -qE '^(User|DynamicUser)=' "$UNIT"
}
ok "systemd unit: start, reload, capabilities, hardening" unit_ok

if have systemd-analyze; then
	# verify insists that ExecStart= programs exist: point them at the
	# built daemon, or at true(1) before there is one.
	mkdir -p "$T_DIR/unit"
	exe=/bin/true
	[ -x "$DOTPROXYD" ] && exe=$DOTPROXYD
	sed "s#/usr/sbin/dotproxyd#$exe#g" "$UNIT" \
	    >"$T_DIR/unit/dotproxyd.service"
	ok "systemd-analyze verify dotproxyd.service" \
	    systemd-analyze verify --man=no "$T_DIR/unit/dotproxyd.service"
else
	skip 1 "systemd-analyze not installed"
fi

# The unit's outer SystemCallFilter= must let through every system call
# the daemon's own policies allow, or it would turn them into EPERM.
if have systemd-analyze && [ -d "$TOP/policy" ]; then
	filter_ok()
	{
		local f item sc missing="" set
		f=$(sed -n 's/^SystemCallFilter=//p' "$UNIT")
		[ -n "$f" ] || return 0
		set=" "
		for item in $f; do
			case $item in
			@*)	set+=$(systemd-analyze syscall-filter "$item" \
				    2>/dev/null | awk 'NR > 1 && $1 !~ /^[@#]/ {
				    printf "%s ", $1 }')
				# groups inside the group
				for sc in $(systemd-analyze syscall-filter \
				    "$item" 2>/dev/null | awk 'NR > 1 &&
				    $1 ~ /^@/ { print $1 }'); do
					set+=$(systemd-analyze syscall-filter \
					    "$sc" 2>/dev/null | awk 'NR > 1 &&
					    $1 !~ /^[@#]/ { printf "%s ", $1 }')
				done ;;
			*)	set+="$item " ;;
			esac
		done
		while read -r sc; do
			case $set in
			*" $sc "*) ;;
			*) missing+=" $sc" ;;
			esac
		done < <(awk '$1 == "allow" { for (i = 2; i <= NF; i++) {
		    if ($i == "if") break; print $i } }' "$TOP"/policy/*.policy |
		    sort -u)
		[ -z "$missing" ] || { echo "not in SystemCallFilter:$missing"; return 1; }
	}
	ok "unit SystemCallFilter= covers the daemon's seccomp policies" filter_ok
else
	skip 1 "systemd-analyze not installed, or no policy/"
fi

if have systemd-tmpfiles; then
	tmpfiles_ok()
	{
		local r=$T_DIR/tmpfiles-root
		[ -n "$UNIT_SOCK" ] && mkdir -p "$r" &&
		    systemd-tmpfiles --root="$r" --create \
			"$C/systemd/dotproxyd.tmpfiles" &&
		    [ "$(stat -c '%a %U' "$r/var/empty")" = "755 root" ] &&
		    [ "$(readlink "$r/run/dotproxyd.sock")" = "$UNIT_SOCK" ]
	}
	# The link points where the unit puts the control socket.
	UNIT_SOCK=$(sed -n 's/^ExecStart=.* -s \([^ ]*\).*/\1/p' "$UNIT")
	ok "tmpfiles.d: /var/empty and the control socket link" tmpfiles_ok
else
	skip 1 "systemd-tmpfiles not installed"
fi

if have systemd-sysusers; then
	sysusers_ok()
	{
		local r=$T_DIR/sysusers-root
		mkdir -p "$r/etc" &&
		    systemd-sysusers --root="$r" \
			"$C/systemd/dotproxyd.sysusers" &&
		    grep -E '^_dotproxyd:x:[0-9]+:[0-9]+:[^:]*:/var/empty:' \
			"$r/etc/passwd"
	}
	ok "sysusers.d: user _dotproxyd with home /var/empty" sysusers_ok
else
	skip 1 "systemd-sysusers not installed"
fi

# ---------------------------------------------------------------------
# Kubernetes

K=$C/kubernetes
if have python3 && python3 -c 'import yaml' 2>/dev/null; then
	for f in configmap daemonset service; do
		ok "kubernetes/$f.yaml parses" python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert len(docs) == 1, "one document expected"
assert docs[0]["kind"] == sys.argv[2], docs[0]["kind"]
' "$K/$f.yaml" "$(case $f in configmap) echo ConfigMap;;
		    daemonset) echo DaemonSet;; service) echo Service;; esac)"
	done

	ok "kubernetes manifests hang together" python3 - "$K" <<'EOF'
import sys, yaml
d = sys.argv[1]
cm = yaml.safe_load(open(d + "/configmap.yaml"))
ds = yaml.safe_load(open(d + "/daemonset.yaml"))
sv = yaml.safe_load(open(d + "/service.yaml"))

spec = ds["spec"]["template"]["spec"]
labels = ds["spec"]["template"]["metadata"]["labels"]
sel = ds["spec"]["selector"]["matchLabels"]
assert all(labels.get(k) == v for k, v in sel.items()), "selector"
assert spec["hostNetwork"] is True, "hostNetwork"
assert spec["dnsPolicy"] == "Default", "dnsPolicy"
(c,) = spec["containers"]
sc = c["securityContext"]
assert sc["runAsUser"] == 0, "runAsUser"
assert sc["readOnlyRootFilesystem"] is True, "readOnlyRootFilesystem"
assert sc["capabilities"]["drop"] == ["ALL"], "drop ALL"
need = {"NET_BIND_SERVICE", "SETUID", "SETGID", "SYS_CHROOT", "SETPCAP", "KILL"}
assert need <= set(sc["capabilities"]["add"]), "capabilities"
assert "readinessProbe" in c and "livenessProbe" in c, "probes"
for k in ("requests", "limits"):
    assert "cpu" in c["resources"][k] and "memory" in c["resources"][k], k
ports = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
assert ports == {(53, "UDP"), (53, "TCP")}, ports

# The config file comes from the ConfigMap and is the one -f names.
vols = {v["name"]: v for v in spec["volumes"]}
mounts = {m["name"]: m for m in c["volumeMounts"]}
cfgvol = [n for n, v in vols.items()
          if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
assert len(cfgvol) == 1, "configMap volume"
path = mounts[cfgvol[0]]["mountPath"]
(key,) = cm["data"].keys()
assert c["args"][c["args"].index("-f") + 1] == path + "/" + key, "-f path"
assert cm["metadata"]["namespace"] == ds["metadata"]["namespace"]

# The Service selects these pods, UDP and TCP 53.
assert sv["spec"]["type"] == "ClusterIP"
assert all(labels.get(k) == v for k, v in sv["spec"]["selector"].items())
sp = {(p["port"], p["protocol"]) for p in sv["spec"]["ports"]}
assert sp == {(53, "UDP"), (53, "TCP")}, sp
assert sv["metadata"]["namespace"] == ds["metadata"]["namespace"]
EOF
	python3 -c '
import sys, yaml
sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["dotproxyd.conf"])
' "$K/configmap.yaml" >"$T_DIR/k8s.conf" 2>/dev/null
else
	skip 4 "python3-yaml not installed"
fi

if have yamllint; then
	ok "yamllint kubernetes/*.yaml" yamllint -s "$K"/*.yaml
else
	skip 1 "yamllint not installed"
fi

# ---------------------------------------------------------------------
# Docker (no engine here: the file is read, not built)

DF=$C/docker/Dockerfile
dockerfile_ok()
{
	[ "$(grep -cE '^FROM debian:12-slim( AS [a-z]+)?$' "$DF")" -eq 2 ] ||
	    { echo "two FROM debian:12-slim stages expected"; return 1; }
	grep -qE '^ENTRYPOINT \["/usr/sbin/dotproxyd", *"-d"\]$' "$DF" ||
	    { echo "ENTRYPOINT"; return 1; }
	if ! grep -qE '^HEALTHCHECK ' "$DF" ||
	    ! grep -qE 'kdig.*@127\.0\.0\.1' "$DF"; then
		echo "HEALTHCHECK with kdig"
		return 1
	fi
	grep -qE '^EXPOSE 53/udp 53/tcp$' "$DF" || { echo EXPOSE; return 1; }
	# The documented docker run grants the same capabilities.
	local cap
	for cap in NET_BIND_SERVICE SETUID SETGID SYS_CHROOT SETPCAP KILL; do
		if ! grep -q -- "--cap-add=$cap" "$DF" ||
		    ! grep -q -- "--cap-add=$cap" "$C/README.md"; then
			echo "--cap-add=$cap not documented"
			return 1
		fi
	done
	# Every file COPY'd from the build context exists.
	local src
	while read -r _ src _; do
		[ "$src" = . ] && continue
		[ -e "$TOP/$src" ] || { echo "COPY source $src missing"; return 1; }
	done < <(grep -E '^COPY [^-]' "$DF")
}
ok "Dockerfile: stages, ENTRYPOINT, HEALTHCHECK, EXPOSE, COPY sources" \
    dockerfile_ok

# ---------------------------------------------------------------------
# Debian packaging files

D=$C/debian
ok "debian maintainer scripts and build.sh: sh -n" \
    sh -c 'for f in "$@"; do sh -n "$f" || exit 1; done' sh \
    "$D/dotproxyd.postinst" "$D/dotproxyd.postrm" "$D/build.sh"
if have dpkg-parsechangelog; then
	is "$(dpkg-parsechangelog -l "$D/changelog" -S Version 2>&1)" \
	    0.1.0-1 "debian/changelog version"
else
	skip 1 "dpkg-dev not installed"
fi
if have shellcheck; then
	ok "shellcheck debian scripts" shellcheck "$D/dotproxyd.postinst" \
	    "$D/dotproxyd.postrm" "$D/build.sh"
else
	skip 1 "shellcheck not installed"
fi

# ---------------------------------------------------------------------
# The example configurations are valid

if [ -x "$DOTPROXYD" ] && [ "$(id -u)" -eq 0 ]; then
	ensure_user
	ok "contrib/dotproxyd.conf.example passes dotproxyd -n" \
	    "$DOTPROXYD" -n -f "$C/dotproxyd.conf.example"
	ok "contrib/docker/dotproxyd.conf passes dotproxyd -n" \
	    "$DOTPROXYD" -n -f "$C/docker/dotproxyd.conf"
	if [ -s "$T_DIR/k8s.conf" ]; then
		ok "the ConfigMap's dotproxyd.conf passes dotproxyd -n" \
		    "$DOTPROXYD" -n -f "$T_DIR/k8s.conf"
	else
		skip 1 "ConfigMap not extracted (python3-yaml missing)"
	fi
else
	skip 3 "dotproxyd not built, or not root"
fi

# ---------------------------------------------------------------------
# make install

have_install=0
if make -C "$TOP" -n install PREFIX=/usr DESTDIR="$T_DIR/probe" \
    >/dev/null 2>&1; then
	have_install=1
fi

if [ "$have_install" -eq 1 ]; then
	DEST=$T_DIR/destdir
	# An existing configuration file must survive make install.
	mkdir -p "$DEST/etc"
	echo "# local configuration" >"$DEST/etc/dotproxyd.conf"
	ok "make install DESTDIR=... PREFIX=/usr" \
	    make -C "$TOP" install DESTDIR="$DEST" PREFIX=/usr
	for f in usr/sbin/dotproxyd usr/sbin/dotproxyctl \
	    usr/libexec/dotproxyd-upstream usr/share/man/man8/dotproxyd.8 \
	    usr/share/man/man8/dotproxyd-upstream.8 usr/share/man/man8/dotproxyctl.8 \
	    usr/share/man/man5/dotproxyd.conf.5 \
	    usr/share/examples/dotproxyd/dotproxyd.conf; do
		if [ -f "$DEST/$f" ]; then
			pass "installed: /$f"
		else
			fail "installed: /$f"
			diag "$(cd "$DEST" && find . | sort)"
		fi
	done
	ok "installed programs are executable" \
	    test -x "$DEST/usr/sbin/dotproxyd" -a -x "$DEST/usr/sbin/dotproxyctl" \
	    -a -x "$DEST/usr/libexec/dotproxyd-upstream"
	is "$(cat "$DEST/etc/dotproxyd.conf")" "# local configuration" \
	    "make install keeps an existing /etc/dotproxyd.conf"
else
	skip 11 "the Makefile has no install target yet"
fi

# ---------------------------------------------------------------------
# The Debian package

if [ "${T_PACKAGING_DEB:-1}" = 0 ]; then
	skip 6 "T_PACKAGING_DEB=0"
elif [ "$have_install" -eq 0 ]; then
	skip 6 "the Makefile has no install target yet"
elif ! have dpkg-buildpackage || ! have dh || ! have lintian; then
	skip 6 "dpkg-dev, debhelper or lintian not installed"
else
	OUT=$T_DIR/deb
	# Not the jobserver of a `make check' this may run under.
	if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
	    timeout 900 "$D/build.sh" "$OUT" >"$T_DIR/deb.log" 2>&1; then
		pass "contrib/debian/build.sh: package builds, no lintian errors"
	else
		fail "contrib/debian/build.sh: package builds, no lintian errors"
		diag_file "$T_DIR/deb.log" 80
	fi
	if lint=$(grep -E '^[EW]: ' "$T_DIR/deb.log"); then
		diag "lintian:"
		diag "$lint"
	fi
	deb=$(find "$OUT" -maxdepth 1 -name 'dotproxyd_*.deb' | head -n 1)
	if [ -n "$deb" ]; then
		contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#')
		deb_has()
		{
			local f
			for f in "$@"; do
				printf '%s\n' "$contents" | grep -qxF -- "$f" ||
				    { echo "missing from the package: $f"; return 1; }
			done
		}
		ok ".deb holds the programs and the configuration" deb_has \
		    /usr/sbin/dotproxyd /usr/sbin/dotproxyctl \
		    /usr/libexec/dotproxyd-upstream /etc/dotproxyd.conf \
		    /usr/share/examples/dotproxyd/dotproxyd.conf
		ok ".deb holds the man pages" deb_has \
		    /usr/share/man/man8/dotproxyd.8.gz \
		    /usr/share/man/man8/dotproxyctl.8.gz \
		    /usr/share/man/man8/dotproxyd-upstream.8.gz \
		    /usr/share/man/man5/dotproxyd.conf.5.gz
		ok ".deb holds the systemd unit, tmpfiles.d and sysusers.d" \
		    deb_has /lib/systemd/system/dotproxyd.service \
		    /usr/lib/tmpfiles.d/dotproxyd.conf \
		    /usr/lib/sysusers.d/dotproxyd.conf
		like "$(dpkg-deb -I "$deb" conffiles 2>&1)" \
		    '^/etc/dotproxyd.conf$' "/etc/dotproxyd.conf is a conffile"
		like "$(dpkg-deb -I "$deb" postinst 2>&1)" \
		    'adduser --system --group' "postinst creates the system user"
	else
		skip 5 "no .deb was built"
	fi
fi

done_testing
