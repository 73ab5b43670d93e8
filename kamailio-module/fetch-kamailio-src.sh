#!/bin/sh
# Fetches the Debian source (Debian's patches applied) of an installed
# kamailio package, for kamailio-sys's build script, and prints the path of
# the unpacked source. Never commit what it fetches.
#
# usage: fetch-kamailio-src.sh                 the host's kamailio; also points
#                                              kamailio-module/.kamailio-src/current
#                                              at it (kamailio-sys's default)
#        fetch-kamailio-src.sh --root DIR      the kamailio installed in root DIR
#                                              (make-kamailio-root.sh)
#
# Sources are cached outside the clone, keyed by the package version:
# $DSFEED_CACHE/kamailio-src/kamailio_VERSION/ (DSFEED_CACHE defaults to
# /var/cache/dsfeed); a cached version is never fetched again.
#
# The host's apt configuration is not touched: source lookups use a private
# one under $DSFEED_CACHE/apt (its own sources list with deb-src entries for
# bookworm and trixie and their updates, its own package lists and
# download cache). DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR (defaults
# http://deb.debian.org/debian and http://deb.debian.org/debian-security)
# choose the archive. Needs apt, dpkg-dev (dpkg-source) and patch.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${DSFEED_CACHE:-/var/cache/dsfeed}

# shellcheck source=kamailio-module/root-arg.sh
. "$here/root-arg.sh"
root_arg fetch-kamailio-src.sh "$@"

if [ -n "$root" ]; then
	[ -d "$root/var/lib/dpkg" ] || {
		echo "fetch-kamailio-src: $root is not a Debian root (no var/lib/dpkg)" >&2
		exit 1
	}
	version=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' kamailio 2>/dev/null) || {
		echo "fetch-kamailio-src: the kamailio package is not installed in $root" >&2
		exit 1
	}
else
	version=$(dpkg-query -W -f='${Version}' kamailio 2>/dev/null) || {
		echo "fetch-kamailio-src: the kamailio package is not installed" >&2
		exit 1
	}
fi
[ -n "$version" ] || {
	echo "fetch-kamailio-src: the kamailio package is not installed${root:+ in $root}" >&2
	exit 1
}
upstream=${version#*:}
upstream=${upstream%-*}
dest=$cache/kamailio-src/kamailio_$version
src=$dest/kamailio-$upstream

# The private apt configuration: every path apt reads or writes for a
# source lookup is under $apt, so the host's sources, lists and
# archives stay as the operator left them.
apt=$cache/apt
apt_private() {
	"$@" -o Dir::Etc::sourcelist="$apt/sources.list" \
		-o Dir::Etc::sourceparts="$apt/sources.list.d" \
		-o Dir::State::Lists="$apt/lists" \
		-o Dir::Cache="$apt/cache" \
		-o APT::Sandbox::User=root
}
write_sources() {
	mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
	security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial"
	{
		echo "# dsfeed's private apt sources: Debian 12 and 13 source packages"
		for suite in bookworm bookworm-updates trixie trixie-updates; do
			echo "deb-src [signed-by=$keyring] $mirror $suite main"
		done
		for suite in bookworm-security trixie-security; do
			echo "deb-src [signed-by=$keyring] $security $suite main"
		done
	} >"$apt/sources.list.new"
	mv "$apt/sources.list.new" "$apt/sources.list"
}

# Unpacks a downloaded 3.0 (quilt) source package as dpkg-source -x would,
# for when dpkg-source refuses: the archive answers 404 for the orig
# tarball's .asc signature of some packages (6.0.1-1+deb13u1), which the
# .dsc lists. apt checked every file it did download against the signed
# Sources index; the tarballs are checked again here against the .dsc.
unpack_by_hand() {
	dsc=$1
	out=$2
	grep -q '^Format: 3.0 (quilt)$' "$dsc" || {
		echo "fetch-kamailio-src: $dsc is not a 3.0 (quilt) package" >&2
		return 1
	}
	sums=$(sed -n '/^Checksums-Sha256:/,/^[^ ]/s/^ \([0-9a-f]\{64\}\) [0-9]* \(.*\)$/\1  \2/p' "$dsc")
	orig=$(echo "$sums" | awk '$2 ~ /\.orig\.tar\.[a-z0-9]+$/ {print $2}')
	debian=$(echo "$sums" | awk '$2 ~ /\.debian\.tar\.[a-z0-9]+$/ {print $2}')
	if [ "$(echo "$orig" | wc -w)" -ne 1 ] || [ "$(echo "$debian" | wc -w)" -ne 1 ]; then
		echo "fetch-kamailio-src: expected one orig and one debian tarball in $dsc" >&2
		return 1
	fi
	echo "$sums" | grep -v '\.asc$' | sha256sum --check --quiet >&2
	mkdir -p "$out"
	tar -xf "$orig" --strip-components=1 -C "$out"
	tar -xf "$debian" -C "$out"
	if [ -f "$out/debian/patches/series" ]; then
		sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$out/debian/patches/series" |
			while read -r patch level; do
				patch -d "$out" --quiet --batch --forward "${level:--p1}" \
					<"$out/debian/patches/$patch" || {
					echo "fetch-kamailio-src: $patch does not apply" >&2
					exit 1
				}
			done
	fi
}

fetch() {
	write_sources
	work=$cache/kamailio-src/.kamailio_$version.partial
	rm -rf "$work"
	mkdir -p "$work"
	cd "$work"
	# Lists fetched before may not know this version yet.
	if ! apt_private apt-cache showsrc --only-source kamailio 2>/dev/null |
		grep -qx "Version: $version"; then
		echo "fetch-kamailio-src: apt-get update (private lists in $apt)" >&2
		apt_private apt-get -qq update
	fi
	# A 404 on the .asc signature alone is handled below; anything else
	# leaves no .dsc, and the log says why.
	apt_private apt-get -q source --download-only --only-source "kamailio=$version" \
		>apt-get-source.log 2>&1 || true
	dsc=
	for file in kamailio_*.dsc; do
		[ -f "$file" ] && dsc=$file
	done
	[ -n "$dsc" ] || {
		tail -n 5 apt-get-source.log >&2
		echo "fetch-kamailio-src: no source package kamailio=$version in" \
			"$apt/sources.list; set DEBIAN_MIRROR to an archive that has it, or," \
			"for a Kamailio not from Debian, unpack its source and build with" \
			"KAMAILIO_SRC=DIR (kamailio-module/README.md, \"Building\")" >&2
		exit 1
	}
	if ! dpkg-source -x "$dsc" "kamailio-$upstream" >/dev/null 2>dpkg-source.log; then
		echo "fetch-kamailio-src: dpkg-source refused ($(tail -n 1 dpkg-source.log));" \
			"unpacking the tarballs and applying debian/patches by hand" >&2
		rm -rf "kamailio-$upstream"
		unpack_by_hand "$dsc" "kamailio-$upstream"
	fi
	rm -f ./*.tar.* ./*.dsc ./*.asc dpkg-source.log apt-get-source.log
	cd "$cache/kamailio-src"
	rm -rf "$dest"
	mv "$work" "$dest"
}

if [ ! -f "$src/src/core/sr_module.h" ]; then
	mkdir -p "$cache/kamailio-src"
	# One fetch at a time per cache (two builds of one machine share it).
	exec 9>"$cache/kamailio-src/.lock"
	flock 9
	[ -f "$src/src/core/sr_module.h" ] || fetch
fi

if [ -z "$root" ]; then
	mkdir -p "$here/.kamailio-src"
	ln -sfn "$src" "$here/.kamailio-src/current"
fi
echo "fetch-kamailio-src: kamailio $version source in $src" >&2
echo "$src"
