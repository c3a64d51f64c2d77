#!/bin/sh
# Build the dotproxyd Debian package from this source tree and check it
# with lintian.
#
# usage: contrib/debian/build.sh [OUTDIR]
#
# The tree is copied (without .git, build/ and any debian/) to a scratch
# directory, contrib/debian is copied to debian/ there, and
# `dpkg-buildpackage -b -us -uc' builds the binary package.  lintian then
# checks the result and fails the script on any error (warnings are
# printed, not fatal).  The .deb, .buildinfo and .changes files end up in
# OUTDIR (default: build/deb below the top of the tree).
#
# Needs: dpkg-dev, debhelper, lintian and the Build-Depends of
# contrib/debian/control.  Set LINTIAN=no to skip the lintian run.

set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
outdir=${1:-$top/build/deb}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

version=$(dpkg-parsechangelog -l "$top/contrib/debian/changelog" -S Version)
upstream=${version%-*}

scratch=$(mktemp -d "${TMPDIR:-/tmp}/dotproxyd-deb.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM HUP

src=$scratch/dotproxyd-$upstream
mkdir "$src"
# Copy the working tree as it is, committed or not.
(cd "$top" && tar -cf - --exclude=./.git --exclude=./build \
    --exclude=./debian .) | (cd "$src" && tar -xf -)
cp -R "$top/contrib/debian" "$src/debian"
rm -f "$src/debian/build.sh"

echo "==> building dotproxyd $version in $src"
(cd "$src" && dpkg-buildpackage -b -us -uc)

changes=$(ls "$scratch"/dotproxyd_"$version"_*.changes)
if [ "${LINTIAN:-yes}" != no ]; then
	echo "==> lintian"
	# Exit status non-zero on errors only; warnings are reported.
	lintian --fail-on error --display-info "$changes"
fi

for f in "$scratch"/*.deb "$scratch"/*.ddeb "$scratch"/*.buildinfo \
    "$scratch"/*.changes; do
	[ -e "$f" ] && cp "$f" "$outdir/"
done
echo "==> packages in $outdir:"
ls -1 "$outdir"
