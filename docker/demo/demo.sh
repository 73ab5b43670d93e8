#!/usr/bin/env bash
# The dsfeed demo: a real Kamailio (file mode), two sipp backends, and dsfeed
# feeding Kamailio from a local sets file. It edits the file and shows the
# sets and a SIP request following the edit. Usage: demo.sh PATH/TO/dsfeed
set -euo pipefail

DSFEED=$(realpath "${1:?usage: demo.sh PATH/TO/dsfeed}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK="$ROOT/.demo"
SIP_PORT=${DEMO_SIP_PORT:-5960}
CTL_PORT=${DEMO_CTL_PORT:-5961}
BACKEND_A=${DEMO_BACKEND_A:-5971}
BACKEND_B=${DEMO_BACKEND_B:-5972}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

show_sets() {
	kamcmd -s "udp:127.0.0.1:$CTL_PORT" dispatcher.list | grep -E 'ID:|URI:' | sed 's/^\s*/    /'
}

call_set_1() {
	rm -f uac.log
	sipp -sf "$ROOT/tests/scenarios/uac.xml" -i 127.0.0.1 -p 0 -s 1 "127.0.0.1:$SIP_PORT" \
		-m 3 -nostdin -timeout 10 -trace_logs -log_file uac.log >/dev/null 2>&1 || true
	sed 's/^/    SIP OPTIONS sip:1@kamailio /' uac.log 2>/dev/null || echo "    no answer"
}

# Wait until Kamailio's loaded set 1 contains $1, and say how long it took.
wait_for_backend() {
	local start=$(date +%s%N)
	for _ in $(seq 300); do
		if show_sets 2>/dev/null | grep -q "$1"; then
			echo "    Kamailio loaded it after $(( ($(date +%s%N) - start) / 1000000 )) ms"
			return 0
		fi
		sleep 0.05
	done
	echo "Kamailio never loaded $1" >&2
	return 1
}

say "Two SIP backends (sipp) on 127.0.0.1:$BACKEND_A and 127.0.0.1:$BACKEND_B"
for port in "$BACKEND_A" "$BACKEND_B"; do
	sipp -sf "$ROOT/tests/scenarios/uas.xml" -i 127.0.0.1 -p "$port" -nostdin >"backend-$port.log" 2>&1 &
	pids+=($!)
done

say "The sets file dsfeed watches: set 1 -> backend A"
cat >sets.yaml <<YAML
sets:
  1:
    - uri: sip:127.0.0.1:$BACKEND_A
      attrs: "duid=backend-a"
YAML
sed 's/^/    /' sets.yaml
: >dispatcher.list

say "Kamailio 5.6 (docker/kamailio/kamailio.cfg): SIP on :$SIP_PORT, ctl (binrpc) on udp:127.0.0.1:$CTL_PORT"
kamailio -f "$ROOT/docker/kamailio/kamailio.cfg" -DD -E -Y "$WORK" -P "$WORK/kamailio.pid" -m 64 -M 8 \
	-A "SIP_LISTEN=udp:127.0.0.1:$SIP_PORT" -A "SIP_LISTEN6=udp:[::1]:$SIP_PORT" \
	-A "CTL_LISTEN=\"udp:127.0.0.1:$CTL_PORT\"" \
	-A "DISPATCHER_LIST=\"$WORK/dispatcher.list\"" >kamailio.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do kamcmd -s "udp:127.0.0.1:$CTL_PORT" core.version >/dev/null 2>&1 && break; sleep 0.1; done
echo "    Kamailio's sets at start (empty list file):"
show_sets || true

say "dsfeed --sets-file sets.yaml -o dispatcher.list --rpc udp:127.0.0.1:$CTL_PORT"
RUST_LOG=${RUST_LOG:-info} "$DSFEED" --sets-file sets.yaml -o dispatcher.list \
	--rpc "udp:127.0.0.1:$CTL_PORT" >dsfeed.log 2>&1 &
pids+=($!)
wait_for_backend "$BACKEND_A"
echo "    dispatcher.list written by dsfeed:"
sed 's/^/    /' dispatcher.list
echo "    Kamailio's sets:"
show_sets
call_set_1

say "Edit the sets file: set 1 -> backend B"
echo "    (dispatcher refuses reloads within its reload_delta, 5 s, of the last one;"
echo "     dsfeed retries until Kamailio has loaded the newest file)"
sed -i "s/$BACKEND_A/$BACKEND_B/; s/backend-a/backend-b/" sets.yaml
sed 's/^/    /' sets.yaml
wait_for_backend "$BACKEND_B"
echo "    Kamailio's sets, no manual reload:"
show_sets
call_set_1

say "dsfeed's log"
sed 's/^/    /' dsfeed.log
echo
echo "Files of this run are in $WORK"
