#!/usr/bin/env bash
# The dsfeed demo: a real Kamailio, two sipp backends, and dsfeed feeding
# Kamailio from a local sets file. It edits the file and shows Kamailio's
# sets and SIP requests following the edit, twice: first in file mode
# (dispatcher.list + binrpc reload, stock Kamailio), then with dsfeed.so
# swapping the sets in memory. Usage: demo.sh PATH/TO/dsfeed
set -euo pipefail

DSFEED=$(realpath "${1:?usage: demo.sh PATH/TO/dsfeed}")
MODULE=${DSFEED_MODULE:-$(dirname "$DSFEED")/libdsfeed.so}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK="$ROOT/.demo"
SIP_PORT=${DEMO_SIP_PORT:-5960}
CTL_PORT=${DEMO_CTL_PORT:-5961}
BACKEND_A=${DEMO_BACKEND_A:-5971}
BACKEND_B=${DEMO_BACKEND_B:-5972}
CTL="udp:127.0.0.1:$CTL_PORT"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
indent() { sed 's/^/    /'; }

pids=()
kamailio_pid=
dsfeed_pid=
cleanup() {
	for pid in "${pids[@]}" $kamailio_pid $dsfeed_pid; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

show_sets() {
	kamcmd -s "$CTL" dispatcher.list | grep -E 'ID:|URI:' | sed 's/^\s*//' | indent
}

call_set_1() {
	rm -f uac.log
	sipp -sf "$ROOT/tests/scenarios/uac.xml" -i 127.0.0.1 -p 0 -s 1 "127.0.0.1:$SIP_PORT" \
		-m 3 -nostdin -timeout 10 -trace_logs -log_file uac.log >/dev/null 2>&1 || true
	if [ -s uac.log ]; then sed 's/^/SIP OPTIONS sip:1@kamailio /' uac.log | indent; else echo "    no answer"; fi
}

# Wait until Kamailio's loaded set 1 contains $1, and say how long it took.
wait_for_backend() {
	local start
	start=$(date +%s%N)
	for _ in $(seq 400); do
		if show_sets 2>/dev/null | grep -q "$1"; then
			echo "    Kamailio has it after $((($(date +%s%N) - start) / 1000000)) ms"
			return 0
		fi
		sleep 0.05
	done
	echo "Kamailio never loaded $1; see $WORK/kamailio.log and $WORK/dsfeed.log" >&2
	return 1
}

set_backend() {
	cat >sets.yaml <<-YAML
		sets:
		  1:
		    - uri: sip:127.0.0.1:$1
		      attrs: "duid=backend-$2"
	YAML
}

# start_kamailio [extra kamailio args...]
start_kamailio() {
	kamailio -f "$ROOT/docker/kamailio/kamailio.cfg" -DD -E -Y "$WORK" -P "$WORK/kamailio.pid" -m 64 -M 8 \
		-A "SIP_LISTEN=udp:127.0.0.1:$SIP_PORT" -A "SIP_LISTEN6=udp:[::1]:$SIP_PORT" \
		-A "CTL_LISTEN=\"$CTL\"" -A "DISPATCHER_LIST=\"$WORK/dispatcher.list\"" "$@" \
		>>kamailio.log 2>&1 &
	kamailio_pid=$!
	for _ in $(seq 100); do kamcmd -s "$CTL" core.version >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "Kamailio did not start; see $WORK/kamailio.log" >&2
	return 1
}

# start_dsfeed [extra dsfeed args...]
start_dsfeed() {
	RUST_LOG=${RUST_LOG:-info} "$DSFEED" --sets-file sets.yaml -o dispatcher.list --rpc "$CTL" "$@" \
		>>dsfeed.log 2>&1 &
	dsfeed_pid=$!
}

stop_both() {
	kill "$dsfeed_pid" "$kamailio_pid" 2>/dev/null || true
	wait "$dsfeed_pid" "$kamailio_pid" 2>/dev/null || true
	dsfeed_pid= kamailio_pid=
}

say "Two SIP backends (sipp): A on 127.0.0.1:$BACKEND_A, B on 127.0.0.1:$BACKEND_B"
for port in "$BACKEND_A" "$BACKEND_B"; do
	sipp -sf "$ROOT/tests/scenarios/uas.xml" -i 127.0.0.1 -p "$port" -nostdin >"backend-$port.log" 2>&1 &
	pids+=($!)
done

say "Part 1, file mode: stock Kamailio reads dispatcher.list, dsfeed writes it and reloads"
set_backend "$BACKEND_A" a
echo "    sets.yaml, the file dsfeed watches:"
indent <sets.yaml
: >dispatcher.list
start_kamailio
echo "    Kamailio 5.6 is up (docker/kamailio/kamailio.cfg), SIP on :$SIP_PORT, ctl on $CTL, empty list"
echo "    \$ dsfeed --sets-file sets.yaml -o dispatcher.list --rpc $CTL"
start_dsfeed
wait_for_backend "$BACKEND_A"
echo "    dispatcher.list, written by dsfeed:"
indent <dispatcher.list
echo "    Kamailio's sets:"
show_sets
call_set_1

say "Edit sets.yaml: set 1 -> backend B"
echo "    (dispatcher refuses reloads within its reload_delta, 5 s, of the last one;"
echo "     dsfeed retries until Kamailio has loaded the newest file)"
set_backend "$BACKEND_B" b
wait_for_backend "$BACKEND_B"
show_sets
call_set_1
stop_both

if [ ! -f "$MODULE" ]; then
	echo
	echo "dsfeed.so is not built ($MODULE); 'make demo' builds it. Skipping part 2."
	exit 0
fi

say "Part 2, dsfeed.so: Kamailio takes the feed over a unix socket and swaps its sets in memory"
set_backend "$BACKEND_A" a
start_kamailio -A WITH_DSFEED -A "DSFEED_MODULE=\"$MODULE\"" -A "FEEDER=\"unix:$WORK/feed.sock\""
echo "    Kamailio starts with dsfeed.so and part 1's dispatcher.list (backend B):"
show_sets
echo "    \$ dsfeed --sets-file sets.yaml --listen unix:$WORK/feed.sock -o dispatcher.list --rpc $CTL"
echo "    (the default --mode auto: it sees dsfeed.so and leaves dispatcher.list alone)"
start_dsfeed --listen "unix:$WORK/feed.sock"
wait_for_backend "$BACKEND_A"
show_sets
call_set_1
list_before=$(md5sum dispatcher.list)

say "Edit sets.yaml: set 1 -> backend B, no file, no reload"
echo "    (the module paces swaps, min_swap_interval_ms = 1000: the stock dispatcher frees"
echo "     a retired list on the next swap while SIP workers may still read it)"
sleep 1
set_backend "$BACKEND_B" b
wait_for_backend "$BACKEND_B"
show_sets
call_set_1
[ "$(md5sum dispatcher.list)" = "$list_before" ] && echo "    dispatcher.list on disk is untouched"
echo "    kamcmd dsfeed.status:"
kamcmd -s "$CTL" dsfeed.status | grep -E 'state|applied_version|swaps|destinations' | sed 's/^\s*//' | indent

say "dsfeed's log"
indent <dsfeed.log
echo
echo "The files of this run are in $WORK"
