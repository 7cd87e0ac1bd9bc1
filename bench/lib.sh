# Shared shell functions of bench/compare.sh and bench/durable.sh; sourced, not run.
#
# The sourcing script sets LOG_TAG (the log prefix), HOST, PORT, BROKERS, WORK, and the PID
# variables BROKER_PID, BENCH_PID, SAMPLER_PID and WATCHDOG_PID before it calls these.

# log MESSAGE...: one line on stderr, prefixed with [LOG_TAG].
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }

# die MESSAGE...: logs MESSAGE and exits with status 1.
die() {
    log "$*"
    exit 1
}

# require_whole_numbers NAME...: dies unless every variable NAME holds a whole number.
require_whole_numbers() {
    local n
    for n in "$@"; do
        case ${!n} in '' | *[!0-9]*) die "$n must be a whole number, not '${!n}'" ;; esac
    done
}

# stop_pid PID: SIGTERM, 5 s at most, then SIGKILL; nothing when PID is empty or gone.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# cleanup: the EXIT trap; stops the watchdog, sampler, load generator and broker, removes WORK.
cleanup() {
    stop_pid "$WATCHDOG_PID"
    stop_pid "$SAMPLER_PID"
    stop_pid "$BENCH_PID"
    stop_pid "$BROKER_PID"
    rm -rf "$WORK"
}

# find_mosquitto: prints the path of the mosquitto binary, or nothing.
find_mosquitto() {
    command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}

# needs BROKER: true when BROKER is one of BROKERS.
needs() { case " $BROKERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ensure_mosquitto: when BROKERS has mosquitto, sets MOSQUITTO to its binary, installing it
# with apt-get (sudo when not root) unless SKIP_INSTALL=1; sets SUDO.
ensure_mosquitto() {
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=(sudo -n env DEBIAN_FRONTEND=noninteractive)
    fi
    MOSQUITTO=""
    needs mosquitto || return 0
    MOSQUITTO=$(find_mosquitto)
    [ -z "$MOSQUITTO" ] || return 0
    [ "${SKIP_INSTALL:-0}" = 1 ] && die "mosquitto is not installed (SKIP_INSTALL=1)"
    [ "${#SUDO[@]}" -eq 0 ] || command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install mosquitto"
    log "installing mosquitto (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)
    if ! timeout 900 "${SUDO[@]}" apt-get install "${opts[@]}" mosquitto </dev/null >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        timeout 600 "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null >&2
        timeout 900 "${SUDO[@]}" apt-get install "${opts[@]}" mosquitto </dev/null >&2
    fi
    MOSQUITTO=$(find_mosquitto)
    [ -n "$MOSQUITTO" ] || die "mosquitto is still missing after apt-get install"
}

# ensure_vane DEFAULT: unless VANE_BIN is set, sets it to DEFAULT and builds it (release)
# unless SKIP_BUILD=1; dies when VANE_BIN is not executable.
ensure_vane() {
    if [ -z "$VANE_BIN" ]; then
        VANE_BIN=$1
        if [ "${SKIP_BUILD:-0}" != 1 ]; then
            log "cargo build --release -p vane"
            timeout 3600 cargo build --release -q -p vane </dev/null >&2
        fi
    fi
    [ -x "$VANE_BIN" ] || die "$VANE_BIN is missing"
}

# check_cpus: sets NPROC; with a single CPU the load generator shares BROKER_CPU.
check_cpus() {
    NPROC=$(nproc)
    if [ "$NPROC" -lt 2 ]; then
        log "only $NPROC CPU: broker and load generator share it, the figures mean little"
        BENCH_CPU=$BROKER_CPU
    fi
}

# port_open PORT: true when something accepts connections on HOST:PORT.
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# stop_broker: stops BROKER_PID (SIGTERM, then SIGKILL after 5 s) and clears it.
stop_broker() {
    stop_pid "$BROKER_PID"
    BROKER_PID=""
}

# ---------------------------------------------------------------------------
# /proc helpers (shell builtins only: no command substitution, no child process, so that
# sampling costs the load generator's CPU next to nothing)
# ---------------------------------------------------------------------------
# proc_kb PID FIELD: sets KB to a /proc/PID/status field in kB (VmRSS, VmHWM); empty once the
# process is gone.
proc_kb() {
    local key value _
    KB=""
    while read -r key value _; do
        if [ "$key" = "$2:" ]; then
            KB=$value
            return
        fi
    done 2>/dev/null <"/proc/$1/status" || true
}

# proc_ticks PID: sets TICKS to the process's utime + stime in clock ticks; empty once it is gone.
proc_ticks() {
    local stat
    TICKS=""
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 0
    # shellcheck disable=SC2206 # the fields after "(comm) " are space-separated numbers
    local fields=(${stat##*) })
    TICKS=$((fields[11] + fields[12]))
}

# count_lines FILE [PREFIX]: sets LINES to the number of lines of FILE (starting with PREFIX).
count_lines() {
    local line
    LINES=0
    while IFS= read -r line; do
        [[ $line == "${2:-}"* ]] && LINES=$((LINES + 1))
    done 2>/dev/null <"$1" || true
}

# A pipe nobody writes to: `read -t` on it sleeps without a child process.
exec {SLEEP_FD}<> <(:)
# pause SECONDS: sleeps without a child process.
pause() {
    read -rt "$1" -u "$SLEEP_FD" _ || true
}

# sample BROKER BENCH ERR OUT: every 0.1 s, "time broker_ticks bench_ticks broker_rss_kb
# progress_lines" while BENCH lives ("-" for what is gone).
sample() {
    local broker=$1 bench=$2 err=$3 out=$4 bt gt
    while kill -0 "$bench" 2>/dev/null; do
        count_lines "$err"
        proc_ticks "$broker"
        bt=$TICKS
        proc_ticks "$bench"
        gt=$TICKS
        proc_kb "$broker" VmRSS
        printf '%s %s %s %s %s\n' "$EPOCHREALTIME" "${bt:--}" "${gt:--}" "${KB:--}" "$LINES" >>"$out"
        pause 0.1
    done
}

# launch_sampled LIMIT JSON ERR SAMPLES ARGS...: starts `vane bench ARGS` pinned to BENCH_CPU
# (stdout to JSON, stderr to ERR), a watchdog that kills it after LIMIT s, and a sampler of
# the broker and the load generator into SAMPLES; sets LAUNCHED, BENCH_PID, WATCHDOG_PID and
# SAMPLER_PID. Does not wait.
launch_sampled() {
    local limit=$1 json=$2 err=$3 samples=$4
    shift 4
    LAUNCHED=$EPOCHREALTIME
    # env and taskset exec the load generator, so $! is its pid (sampled for CPU). It stops by
    # itself (it has a hard deadline of its own); the watchdog is a second guard.
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE taskset -c "$BENCH_CPU" "$VANE_BIN" bench "$@" >"$json" 2>"$err" &
    BENCH_PID=$!
    (
        pause "$limit"
        kill -9 "$BENCH_PID" 2>/dev/null
    ) &
    WATCHDOG_PID=$!
    sample "$BROKER_PID" "$BENCH_PID" "$err" "$samples" &
    SAMPLER_PID=$!
}

# finish_sampled: waits for the load generator of launch_sampled, then stops its watchdog and
# sampler; sets BENCH_STATUS (its exit status) and ENDED.
finish_sampled() {
    BENCH_STATUS=0
    wait "$BENCH_PID" || BENCH_STATUS=$?
    BENCH_PID=""
    ENDED=$EPOCHREALTIME
    stop_pid "$WATCHDOG_PID"
    WATCHDOG_PID=""
    stop_pid "$SAMPLER_PID"
    SAMPLER_PID=""
}

# vane_rev: prints the short commit of HEAD, with " + uncommitted changes" when crates/ or
# the Cargo files differ from it.
vane_rev() {
    local rev
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || rev="$rev + uncommitted changes"
    printf '%s\n' "$rev"
}

# machine_facts: prints the date and the machine (CPU model and count, kernel, memory) as
# key=value lines for machine.env; needs NPROC.
machine_facts() {
    printf 'date=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'cpu_model=%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'cpus=%s\n' "$NPROC"
    printf 'kernel=%s\n' "$(uname -sr)"
    printf 'memory_kb=%s\n' "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
}

# write_report REPORT_PY OUT: writes OUT/report.md with REPORT_PY, and into BENCHMARKS.md
# unless NO_BENCHMARKS_UPDATE=1.
write_report() {
    local report_args=(report --dir "$2")
    [ "${NO_BENCHMARKS_UPDATE:-0}" = 1 ] || report_args+=(--benchmarks "$REPO_ROOT/BENCHMARKS.md")
    python3 "$1" "${report_args[@]}"
}
