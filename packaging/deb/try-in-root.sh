#!/bin/sh
# Installs dsfeed's Debian packages into a throwaway copy of a Debian root
# (make-kamailio-root.sh's, with that release's kamailio) and checks them
# as an operator would, printing one "ok:" line per check; any failure ends
# it with a non-zero status and says which.
#
# usage: try-in-root.sh ROOT FEEDER_DEB MODULE_DEB [FOREIGN_MODULE_DEB]
#
# FOREIGN_MODULE_DEB, a module package built for another Kamailio, must be
# refused by dpkg. The root itself is never changed: everything happens in
# an overlay in a private mount namespace, gone when the script ends.
# Needs root, unshare, overlayfs and the host's systemd-analyze.
set -eu

if [ -z "${DSFEED_TRY_NS:-}" ]; then
	export DSFEED_TRY_NS=1
	exec unshare --mount --propagation private -- "$0" "$@"
fi
[ $# -ge 3 ] || {
	echo "usage: try-in-root.sh ROOT FEEDER_DEB MODULE_DEB [FOREIGN_MODULE_DEB]" >&2
	exit 2
}
root=$1 feeder=$2 module=$3 foreign=${4:-}
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

work=$(mktemp -d)
mkdir "$work/upper" "$work/work" "$work/merged"
mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/work" "$work/merged"
r=$work/merged
mount -t proc proc "$r/proc"
in_root() { chroot "$r" "$@"; }
cp "$feeder" "$module" ${foreign:+"$foreign"} "$r/tmp/"

# The module first: the feeder's postinst then finds Kamailio's user.
in_root dpkg -i "/tmp/$(basename "$module")" >"$work/dpkg.log" 2>&1 ||
	fail "dpkg -i $(basename "$module"): $(cat "$work/dpkg.log")"
in_root dpkg -i "/tmp/$(basename "$feeder")" >"$work/dpkg.log" 2>&1 ||
	fail "dpkg -i $(basename "$feeder"): $(cat "$work/dpkg.log")"
echo "ok: installed $(in_root dpkg-query -W -f='${Package}=${Version} ' kamailio kamailio-dsfeed dsfeed)"

in_root id dsfeed >/dev/null || fail "no user dsfeed"
in_root id -nG kamailio | grep -qw dsfeed || fail "kamailio is not in the group dsfeed"
echo "ok: user dsfeed; kamailio in its group"
[ "$(in_root stat -c %U /data/kamailio)" = dsfeed ] || fail "/data/kamailio is not dsfeed's"
echo "ok: /data/kamailio belongs to dsfeed"

# The unit, against the standard targets of a systemd (the minimal root
# has none: copied from the host into the throwaway copy). verify reports
# a bad line with a warning and status 0, so any output is a failure.
mkdir -p "$r/usr/lib/systemd/system"
cp -n /usr/lib/systemd/system/*.target /usr/lib/systemd/system/*.slice "$r/usr/lib/systemd/system/" 2>/dev/null || true
verify=$(systemd-analyze verify --root="$r" dsfeed.service 2>&1) ||
	fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
echo "ok: systemd-analyze verify dsfeed.service"

# The shipped environment file, with a source added, is a usable
# configuration; and the feeder writes the list as its own user.
check=$(in_root sh -c 'set -a; . /etc/default/dsfeed; DSFEED_STATIC=1=10.0.0.1 dsfeed --check' 2>&1) ||
	fail "dsfeed --check with /etc/default/dsfeed: $check"
echo "ok: dsfeed --check with /etc/default/dsfeed"
in_root setpriv --reuid=dsfeed --regid=dsfeed --clear-groups \
	dsfeed --static 1=10.0.0.1 --once -o /data/kamailio/dispatcher.list >"$work/once.log" 2>&1 ||
	fail "dsfeed --once as dsfeed: $(cat "$work/once.log")"
grep -q '^1 sip:10.0.0.1:5060 0 0$' "$r/data/kamailio/dispatcher.list" ||
	fail "dispatcher.list: $(cat "$r/data/kamailio/dispatcher.list")"
echo "ok: dsfeed --once as user dsfeed wrote /data/kamailio/dispatcher.list"

# The root's Kamailio loads the packaged module by name.
cat >"$r/tmp/dsfeed-check.cfg" <<CFG
#!KAMAILIO
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "/data/kamailio/dispatcher.list")
loadmodule "dsfeed.so"
modparam("dsfeed", "feeder", "unix:/run/dsfeed/feed.sock")
request_route { drop; }
CFG
loaded=$(in_root kamailio -c -f /tmp/dsfeed-check.cfg 2>&1) ||
	fail "kamailio -c with loadmodule \"dsfeed.so\": $loaded"
echo "ok: $(in_root kamailio -v | sed -n 's/^version: \(.*[^ ]\) *$/\1/p') loads dsfeed.so"

if [ -n "$foreign" ]; then
	if in_root dpkg -i "/tmp/$(basename "$foreign")" >"$work/dpkg.log" 2>&1; then
		fail "dpkg installed $(basename "$foreign"), built for another Kamailio"
	fi
	echo "ok: refused $(basename "$foreign"): $(grep -m1 'depends on kamailio' "$work/dpkg.log" | sed 's/^ *//')"
fi
