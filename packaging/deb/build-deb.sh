#!/bin/sh
# Builds the Debian packages `make deb` ships, and prints each .deb's path.
#
# usage: build-deb.sh feeder BINARY OUTDIR
#          dsfeed_VERSION-1_amd64.deb: BINARY as /usr/bin/dsfeed, the systemd
#          unit, /etc/default/dsfeed, the dsfeed system user
#        build-deb.sh module DSFEED_SO OUTDIR [ROOT]
#          kamailio-dsfeed_VERSION-1+kamailioK_amd64.deb: DSFEED_SO in the
#          modules directory of the Kamailio installed on this machine (or
#          in the Debian root ROOT), depending on exactly that Kamailio
#          package version, since the loader refuses any other
#
# VERSION is the workspace's (Cargo.toml). DSFEED_DEB_COMPRESSION (default
# xz) is dpkg-deb's -Z: the tests, which throw the packages away, use none,
# since xz takes half a minute on a debug binary. Only dpkg-deb is needed; the
# packages are built from files, not from a debian/ source tree, because
# the binaries come from cargo (and, for the module, from a build against
# one Kamailio's headers) rather than from a Debian source package.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../.." && pwd)

usage() {
	echo "usage: build-deb.sh feeder BINARY OUTDIR | module DSFEED_SO OUTDIR [ROOT]" >&2
	exit 2
}

[ $# -ge 3 ] || usage
what=$1 input=$2 out=$3
root=${4:-}
[ -f "$input" ] || {
	echo "build-deb: no file $input" >&2
	exit 1
}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$workspace/Cargo.toml")
[ -n "$version" ] || {
	echo "build-deb: no version in $workspace/Cargo.toml" >&2
	exit 1
}
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT

# Debian's copyright file, pointing at the license text every system has.
copyright() {
	cat <<-COPYRIGHT
		Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
		Upstream-Name: dsfeed
		
		Files: *
		Copyright: the dsfeed authors
		License: Apache-2.0
		 On Debian systems the full text of the Apache License 2.0 is in
		 /usr/share/common-licenses/Apache-2.0.
	COPYRIGHT
}

case $what in
feeder)
	package=dsfeed
	deb_version=$version-1
	install -D -m 755 "$input" "$stage/usr/bin/dsfeed"
	strip --strip-debug "$stage/usr/bin/dsfeed" 2>/dev/null || true
	install -D -m 644 "$here/dsfeed.service" "$stage/usr/lib/systemd/system/dsfeed.service"
	install -D -m 644 "$here/dsfeed.default" "$stage/etc/default/dsfeed"
	install -D -m 644 "$workspace/README.md" "$stage/usr/share/doc/dsfeed/README.md"
	mkdir -p "$stage/DEBIAN"
	copyright >"$stage/usr/share/doc/dsfeed/copyright"
	echo /etc/default/dsfeed >"$stage/DEBIAN/conffiles"
	install -m 755 "$here/dsfeed.postinst" "$stage/DEBIAN/postinst"
	install -m 755 "$here/dsfeed.prerm" "$stage/DEBIAN/prerm"
	install -m 755 "$here/dsfeed.postrm" "$stage/DEBIAN/postrm"
	depends="libc6 (>= 2.36), libgcc-s1, passwd"
	description="Kamailio dispatcher sets from Kubernetes, Consul and static sources
 dsfeed watches Kubernetes EndpointSlices, Consul health and static sets,
 merges them into one versioned snapshot and delivers it to Kamailio:
 atomically written dispatcher.list and a paced binrpc reload for a stock
 Kamailio, or a gRPC feed for the dsfeed.so module (kamailio-dsfeed)."
	extra="Suggests: kamailio-dsfeed"
	;;
module)
	package=kamailio-dsfeed
	admindir=${root:+--admindir=$root/var/lib/dpkg}
	# shellcheck disable=SC2086 # empty or one word
	kamailio=$(dpkg-query $admindir -W -f='${Version}' kamailio 2>/dev/null) || true
	[ -n "$kamailio" ] || {
		echo "build-deb: kamailio is not installed${root:+ in $root}" >&2
		exit 1
	}
	upstream=${kamailio%%-*}
	# The module must have been built for this Kamailio: its load check
	# string names the release.
	grep -aq "kamailio $upstream (" "$input" || {
		echo "build-deb: $input was not built for kamailio $upstream" >&2
		exit 1
	}
	# shellcheck disable=SC2086
	modules=$(dpkg $admindir -L kamailio | grep -m1 '/kamailio/modules$') || {
		echo "build-deb: no modules directory in the kamailio package" >&2
		exit 1
	}
	deb_version=$version-1+kamailio$upstream
	install -D -m 644 "$input" "$stage$modules/dsfeed.so"
	strip --strip-debug "$stage$modules/dsfeed.so" 2>/dev/null || true
	install -D -m 644 "$workspace/kamailio-module/README.md" "$stage/usr/share/doc/kamailio-dsfeed/README.md"
	mkdir -p "$stage/DEBIAN"
	copyright >"$stage/usr/share/doc/kamailio-dsfeed/copyright"
	install -m 755 "$here/kamailio-dsfeed.postinst" "$stage/DEBIAN/postinst"
	depends="kamailio (= $kamailio)"
	description="dsfeed.so: Kamailio's dispatcher sets from a dsfeed feed, in memory
 A Kamailio module that subscribes to a dsfeed feeder's gRPC stream and
 swaps the stock dispatcher module's sets in memory, keeping each
 destination's probing state. Built for kamailio $kamailio exactly:
 Kamailio refuses a module built for another release, so this package
 depends on that version and apt upgrades the two together or not at all."
	extra="Suggests: dsfeed"
	;;
*) usage ;;
esac

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $deb_version
Architecture: $arch
Maintainer: dsfeed maintainers <dsfeed@localhost>
Installed-Size: $size
Depends: $depends
$extra
Section: net
Priority: optional
Description: $description
CONTROL
deb=$out/${package}_${deb_version}_$arch.deb
dpkg-deb --root-owner-group "-Z${DSFEED_DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
