# Process helpers shared by the integration tests (tests/integration/
# lib.sh) and the benchmark (tests/bench/bench.sh).  Sourced, not run.

# alive PID: the process exists and is not a zombie.
alive()
{
	local state
	[ -r "/proc/$1/stat" ] || return 1
	state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# descendants PID: every descendant of PID, one a line.
descendants()
{
	local c
	for c in $(pgrep -P "$1" 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}

# wait_gone TENTHS PID...: wait at most TENTHS/10 seconds for the
# processes to go away.  Returns 0 when all are gone.
wait_gone()
{
	local tenths=$1 p left i
	shift
	for ((i = 0; i < tenths; i++)); do
		left=0
		for p in "$@"; do
			alive "$p" && left=1
		done
		[ "$left" -eq 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# kill_tree PID: SIGTERM the process, its group and its descendants,
# SIGKILL whatever is left after 5 seconds, then reap it.
kill_tree()
{
	local pid=$1 all
	all="$pid $(descendants "$pid")"
	# shellcheck disable=SC2086
	kill -TERM -- "-$pid" $all 2>/dev/null
	# shellcheck disable=SC2086
	if ! wait_gone 50 $all; then
		# shellcheck disable=SC2086
		kill -KILL -- "-$pid" $all 2>/dev/null
		# shellcheck disable=SC2086
		wait_gone 20 $all
	fi
	wait "$pid" 2>/dev/null
	return 0
}
