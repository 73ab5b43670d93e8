#!/bin/sh
# Makes (once) a minimal Debian root with that suite's real kamailio
# packages installed (kamailio, its extra and utils modules), for building dsfeed.so against another Kamailio than
# the host's and for running the real-Kamailio tests against it, and prints
# the root's path.
#
# usage: make-kamailio-root.sh [--refresh] [SUITE]        (default: trixie)
#
# The root is cached outside the clone, keyed by the Kamailio version it
# holds: $DSFEED_CACHE/roots/SUITE-kamailio_VERSION (DSFEED_CACHE defaults
# to /var/cache/dsfeed), with $DSFEED_CACHE/roots/SUITE pointing at the
# newest one. A later run reuses it without the network; --refresh makes a
# new one (after a Debian update); a root of an older version stays until
# removed by hand. Making trixie's took 35 to 85 s here and keeps 265 MB.
#
# Needs root and debootstrap. DEBIAN_MIRROR (default
# http://deb.debian.org/debian) is the archive debootstrap reads.
#
# Run the root's Kamailio with kamailio-module/kamailio-in-root, which mounts
# /proc, /dev and the temp dir in a private mount namespace: nothing is
# mounted into the cached root from outside.
set -eu

refresh=
if [ "${1:-}" = --refresh ]; then
	refresh=1
	shift
fi
suite=${1:-trixie}
case $suite in
*[!a-z0-9-]* | "")
	echo "make-kamailio-root: bad suite name: $suite" >&2
	exit 2
	;;
esac

cache=${DSFEED_CACHE:-/var/cache/dsfeed}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
roots=$cache/roots
link=$roots/$suite

# What a root holds: Kamailio and the modules the tests load
# (kamailio-utils-modules for http_client).
packages="kamailio kamailio-extra-modules kamailio-utils-modules"

# The Kamailio a finished root holds; empty if the root is incomplete or
# lacks one of the packages (a root made before one was added is made
# again).
root_version() {
	[ -f "$1/.dsfeed-root-complete" ] || return 0
	# shellcheck disable=SC2086 # one word a package
	dpkg-query --admindir="$1/var/lib/dpkg" -W $packages >/dev/null 2>&1 || return 0
	dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Version}' kamailio 2>/dev/null || true
}

if [ -z "$refresh" ] && [ -n "$(root_version "$link")" ]; then
	cd "$link" && pwd -P
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "make-kamailio-root: debootstrap and chroot need root" >&2
	exit 1
fi
command -v debootstrap >/dev/null || {
	echo "make-kamailio-root: debootstrap is missing (apt-get install debootstrap)" >&2
	exit 1
}
mkdir -p "$roots"

# One maker at a time: two CI runs on one machine share the cache.
exec 9>"$roots/.lock"
flock 9
if [ -z "$refresh" ] && [ -n "$(root_version "$link")" ]; then
	cd "$link" && pwd -P
	exit 0
fi

work=$roots/.$suite.partial
rm -rf "$work"
echo "make-kamailio-root: debootstrap $suite from $mirror into $work (a minute or two)" >&2
started=$(date +%s)
if ! debootstrap --variant=minbase --include="$(printf %s "$packages" | tr ' ' ,)" \
	"$suite" "$work" "$mirror" >"$roots/.$suite.debootstrap.log" 2>&1; then
	tail -n 20 "$roots/.$suite.debootstrap.log" >&2
	echo "make-kamailio-root: debootstrap failed; full log: $roots/.$suite.debootstrap.log" >&2
	exit 1
fi
# debootstrap leaves no apt cache worth keeping; the .debs are 60 MB.
rm -rf "$work"/var/cache/apt/archives/*.deb

version=$(dpkg-query --admindir="$work/var/lib/dpkg" -W -f='${Version}' kamailio)
chroot "$work" /usr/sbin/kamailio -v >/dev/null || {
	echo "make-kamailio-root: the root's kamailio -v does not run" >&2
	exit 1
}
touch "$work/.dsfeed-root-complete"
final=$roots/$suite-kamailio_$version
rm -rf "$final"
mv "$work" "$final"
ln -sfn "$(basename "$final")" "$link.new"
mv -T "$link.new" "$link"
echo "make-kamailio-root: kamailio $version in $final ($(($(date +%s) - started)) s," \
	"$(du -sm "$final" | cut -f1) MB)" >&2
echo "$final"
