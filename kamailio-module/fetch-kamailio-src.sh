#!/bin/sh
# Fetches the source of the installed Debian kamailio package (with Debian's
# patches applied) for kamailio-sys's build script, and points
# kamailio-module/.kamailio-src/current at it. Never commit what it fetches.
#
# usage: fetch-kamailio-src.sh [DEST_DIR]     (default: kamailio-module/.kamailio-src)
# Needs a deb-src line in the apt sources and dpkg-dev (dpkg-source).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-"$here/.kamailio-src"}

version=$(dpkg-query -W -f='${Version}' kamailio 2>/dev/null) || {
	echo "fetch-kamailio-src: the kamailio package is not installed" >&2
	exit 1
}
upstream=${version#*:}
upstream=${upstream%-*}

# Debian 12 images ship binary sources only: add the matching deb-src
# entries (same mirrors and suites) once, so apt-get source can work.
enable_deb_src() {
	if grep -Eqs '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/*; then
		return 0
	fi
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
			>/etc/apt/sources.list.d/dsfeed-deb-src.sources
	elif grep -Eqs '^deb ' /etc/apt/sources.list; then
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/dsfeed-deb-src.list
	else
		return 1
	fi
	echo "fetch-kamailio-src: added deb-src entries; apt-get update" >&2
	apt-get update -qq
}

mkdir -p "$dest"
cd "$dest"
if [ ! -f "kamailio-$upstream/src/core/sr_module.h" ]; then
	enable_deb_src || true
	if ! apt-get source --only-source "kamailio=$version"; then
		echo "fetch-kamailio-src: apt-get source failed; add a deb-src line for" \
			"the suite kamailio $version comes from and run apt-get update" >&2
		exit 1
	fi
fi
ln -sfn "kamailio-$upstream" current
echo "kamailio $version source: $dest/current"
