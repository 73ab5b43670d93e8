# Sourced by the scripts that build for either the host's Kamailio or the
# one installed in a Debian root (make-kamailio-root.sh), so that both
# take that choice the same way.
#
# usage: root_arg SCRIPT [--root DIR]
# Sets root to DIR as an absolute path, or to empty for the host's
# Kamailio; exits 2 on other words, 1 when DIR is not a directory.
root_arg() {
	script=$1
	shift
	case "$#:${1:-}" in
	0:) root= ;;
	2:--root)
		root=$(cd "$2" 2>/dev/null && pwd -P) || {
			echo "${script%.sh}: no root directory $2" >&2
			exit 1
		}
		;;
	*)
		echo "usage: $script [--root DIR]" >&2
		exit 2
		;;
	esac
}
