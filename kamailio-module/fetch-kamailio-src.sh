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

mkdir -p "$dest"
cd "$dest"
if [ ! -f "kamailio-$upstream/src/core/sr_module.h" ]; then
	if ! apt-get source --only-source "kamailio=$version"; then
		echo "fetch-kamailio-src: apt-get source failed; add a deb-src line for" \
			"the suite kamailio $version comes from and run apt-get update" >&2
		exit 1
	fi
fi
ln -sfn "kamailio-$upstream" current
echo "kamailio $version source: $dest/current"
