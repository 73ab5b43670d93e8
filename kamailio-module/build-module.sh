#!/bin/sh
# Builds dsfeed.so (release) for one Kamailio and prints where it is:
# target/kamailio-VERSION/dsfeed.so, VERSION being what that Kamailio's
# `kamailio -v` says (6.0.1).
#
# usage: build-module.sh              for the host's kamailio; also copied to
#                                     target/release/dsfeed.so
#        build-module.sh --root DIR   for the kamailio installed in the Debian
#                                     root DIR (make-kamailio-root.sh)
#
# The source comes from fetch-kamailio-src.sh (Debian's package of the
# installed version), unless KAMAILIO_SRC names one already unpacked (a
# Kamailio from Kamailio's own packages; kamailio-module/README.md). Either
# way kamailio-sys's build script checks the headers against that
# Kamailio's `kamailio -v` and fails on a mismatch. A root's build has a
# cargo target dir of its own (target/kamailio-VERSION/cargo), so that
# building for two Kamailios in turn never rebuilds one for the other.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}

# shellcheck source=kamailio-module/root-arg.sh
. "$here/root-arg.sh"
root_arg build-module.sh "$@"
if [ -n "$root" ] && [ ! -x "$root/usr/sbin/kamailio" ]; then
	echo "build-module: no kamailio installed in $root (no usr/sbin/kamailio);" \
		"make a root with kamailio-module/make-kamailio-root.sh" >&2
	exit 1
fi

if [ -n "$root" ]; then
	bin=$here/kamailio-in-root
	export KAMAILIO_ROOT="$root"
	fetch_args="--root $root"
else
	bin=${KAMAILIO_BIN:-$(command -v kamailio || echo /usr/sbin/kamailio)}
	fetch_args=
fi

# "version: kamailio 6.0.1 (x86_64/linux)" -> 6.0.1
version=$("$bin" -v | sed -n 's/^version: [^ ]* \([^ ]*\) .*/\1/p')
[ -n "$version" ] || {
	echo "build-module: \`$bin -v\` printed no version line" >&2
	exit 1
}

if [ -z "${KAMAILIO_SRC:-}" ]; then
	# shellcheck disable=SC2086 # fetch_args is empty or two words
	KAMAILIO_SRC=$("$here/fetch-kamailio-src.sh" $fetch_args)
fi
export KAMAILIO_SRC KAMAILIO_BIN="$bin"

out=$target/kamailio-$version
mkdir -p "$out"
cd "$workspace"
if [ -n "$root" ]; then
	CARGO_TARGET_DIR=$out/cargo cargo build --release --locked -p dsfeed-module
	cp "$out/cargo/release/libdsfeed.so" "$out/dsfeed.so"
else
	cargo build --release --locked -p dsfeed-module
	cp "$target/release/libdsfeed.so" "$target/release/dsfeed.so"
	cp "$target/release/libdsfeed.so" "$out/dsfeed.so"
fi
echo "build-module: dsfeed.so for kamailio $version${root:+ in $root}: $out/dsfeed.so" >&2
echo "$out/dsfeed.so"
