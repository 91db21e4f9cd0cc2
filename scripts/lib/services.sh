# shellcheck shell=bash
#
# Private RabbitMQ and Redis instances for scripts/run and scripts/test.
#
# Source this file, then:
#
#   dev_services_up NAME [--fresh]   ensure both services, export
#                                    DISPATCH_AMQP_URL and DISPATCH_REDIS_URL
#   dev_services_down NAME           stop whatever dev_services_up NAME started
#   dev_services_describe            one-line summary (passwords masked)
#   dev_rabbitmqctl NAME ARGS...     rabbitmqctl against the private node
#   dev_services_restart DIR SERVICE [SECS]
#                                    restart the private rabbitmq or redis of
#                                    instance directory DIR (exported as
#                                    DISPATCH_DEV_SERVICES_DIR when both are
#                                    private), for outage tests
#
# A service whose URL variable is already set is used as is and never touched.
# Otherwise the service is started on free loopback ports, with all of its
# state under .dev/NAME/ in the repository. NAME keeps instances apart, so a
# test run and a running system can coexist. Data under .dev/NAME survives
# between runs unless --fresh is given.
#
# Stopping and orphan clean-up only ever touch processes this library started:
# RabbitMQ's processes carry DISPATCH_DEV_SERVICE=<instance dir>/rabbitmq in
# their environment (which also catches the helpers the node spawns: epmd,
# erl_child_setup, ...); Redis is found through its pidfile, double-checked
# against its process title (Redis overwrites its environment block, so the
# tag does not work there).

_DEV_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
_DEV_DIR="$_DEV_REPO_ROOT/.dev"
# Seconds RabbitMQ may take to accept AMQP connections.
: "${DEV_SERVICES_RABBITMQ_TIMEOUT:=90}"

# Set by dev_services_up: "private" or "external" for each service.
DEV_SERVICES_AMQP_SOURCE=""
DEV_SERVICES_REDIS_SOURCE=""

_dev_log() { printf '[services] %s\n' "$*" >&2; }
_dev_err() { printf '[services] ERROR: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

# Run a command as root: directly when we are root, otherwise through sudo.
_dev_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
_dev_tcp_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when PORT is taken: a listener on any address (ss, when present) or
# anything answering on loopback (bash /dev/tcp; python is not required).
_dev_port_in_use() {
    if command -v ss >/dev/null 2>&1 &&
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; then
        return 0
    fi
    _dev_tcp_open "$1"
}

# _dev_pick_port VAR: store a free port in VAR (locals are prefixed so that
# they cannot shadow the caller's VAR). Ports come from 20000-31999,
# below Linux's ephemeral range (32768+) and clear of the well-known defaults
# (5672, 6379, 4369, 25672, 35672-35682). Ports handed out earlier in this
# shell are not reused, even before anything listens on them.
_DEV_PICKED_PORTS=" "
_dev_pick_port() {
    local _pp_port _pp_tries=0
    while [ "$_pp_tries" -lt 500 ]; do
        _pp_tries=$((_pp_tries + 1))
        _pp_port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        case "$_DEV_PICKED_PORTS" in *" $_pp_port "*) continue ;; esac
        _dev_port_in_use "$_pp_port" && continue
        _DEV_PICKED_PORTS="$_DEV_PICKED_PORTS$_pp_port "
        printf -v "$1" '%s' "$_pp_port"
        return 0
    done
    _dev_err "could not find a free TCP port on 127.0.0.1"
    return 1
}

# True while PID runs (a zombie, waiting for its parent to reap it, is done).
_dev_alive() {
    local stat
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Start time of a process (clock ticks since boot), to tell a live process
# from a recycled PID.
_dev_proc_start() {
    local stat
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) } # drop "pid (comm) ", comm may contain spaces
    # shellcheck disable=SC2086
    set -- $stat
    printf '%s\n' "${20}"
}

# PIDs of the processes tagged with DISPATCH_DEV_SERVICE=TAG, optionally only
# those whose command name is COMM.
_dev_tagged_pids() {
    local tag=$1 comm=${2:-} f pid c
    grep -lsxzF -e "DISPATCH_DEV_SERVICE=$tag" /proc/[0-9]*/environ 2>/dev/null |
        while IFS= read -r f; do
            pid=${f#/proc/}
            pid=${pid%/environ}
            if [ -n "$comm" ]; then
                read -r c 2>/dev/null <"/proc/$pid/comm" || continue
                [ "$c" = "$comm" ] || continue
            fi
            printf '%s\n' "$pid"
        done
    return 0
}

# _dev_wait_untagged TAG SECONDS [COMM]: wait until no tagged process is left.
_dev_wait_untagged() {
    local end=$((SECONDS + $2))
    while [ -n "$(_dev_tagged_pids "$1" "${3:-}")" ]; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.2
    done
}

# Kill every process tagged TAG: SIGTERM, then SIGKILL after SECONDS.
_dev_kill_tagged() {
    local pids
    pids=$(_dev_tagged_pids "$1")
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    _dev_wait_untagged "$1" "$2" && return 0
    pids=$(_dev_tagged_pids "$1")
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    _dev_wait_untagged "$1" 5 || true
}

# Per-instance state file: KEY=VALUE lines, last one wins.
_dev_state_get() {
    [ -f "$1/state" ] || return 0
    sed -n "s/^$2=//p" "$1/state" | tail -n 1
}
_dev_state_set() {
    printf '%s=%s\n' "$2" "$3" >>"$1/state"
}

# True when the process that brought instance DIR up is still running.
_dev_owner_alive() {
    local pid start
    pid=$(_dev_state_get "$1" OWNER_PID)
    start=$(_dev_state_get "$1" OWNER_START)
    [ -n "$pid" ] && [ "$(_dev_proc_start "$pid" 2>/dev/null)" = "$start" ]
}

_dev_log_tail() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf -- '----- last lines of %s -----\n' "${f#"$_DEV_REPO_ROOT"/}" >&2
        tail -n 30 "$f" >&2
    done
}

# Replace the password of a URL with ***, for printing.
dev_redact_url() {
    printf '%s\n' "$1" | sed -E 's#^([a-z+]+://[^:/@]*):[^@/]*@#\1:***@#'
}

# ---------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------

# Directory holding RabbitMQ's own rabbitmq-server / rabbitmqctl scripts.
# On Debian/Ubuntu, /usr/sbin/rabbitmq-server and friends are wrappers that,
# run as root, switch to the "rabbitmq" user with su (which resets HOME, so our
# private cookie is ignored, and that user cannot write to .dev), and refuse
# to run for other users. The real scripts live in /usr/lib/rabbitmq/bin.
_dev_rabbitmq_sbin() {
    local d p
    for d in /usr/lib/rabbitmq/bin /usr/local/lib/rabbitmq/bin; do
        if [ -x "$d/rabbitmq-server" ] && [ -x "$d/rabbitmqctl" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    # Other layouts (e.g. the generic Unix tarball on PATH).
    p=$(command -v rabbitmq-server 2>/dev/null) || return 1
    d=$(dirname "$p")
    case "$d" in /usr/sbin | /sbin) return 1 ;; esac # Debian wrappers
    [ -x "$d/rabbitmqctl" ] || return 1
    printf '%s\n' "$d"
}

# _dev_apt_install PACKAGE...: install Debian packages without letting their
# system services start.
_dev_apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        _dev_err "missing package(s): $*, and apt-get is not available to install them."
        _dev_err "Install them by hand, or set DISPATCH_AMQP_URL / DISPATCH_REDIS_URL to existing servers."
        return 1
    fi
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
        _dev_err "missing package(s): $*; installing them needs root, and sudo is not available."
        _dev_err "Run 'apt-get install $*' as root, or set DISPATCH_AMQP_URL / DISPATCH_REDIS_URL to existing servers."
        return 1
    fi
    _dev_log "installing Debian package(s) $* with apt-get$([ "$(id -u)" -eq 0 ] || echo ' (via sudo)')"

    # The packages' maintainer scripts would start (and enable) the system-wide
    # rabbitmq-server / redis-server services on the default ports. We run our
    # own private instances instead, so tell invoke-rc.d / deb-systemd-invoke
    # "action not allowed" (exit 101) through a temporary policy-rc.d. An
    # existing policy-rc.d (common in Docker images) is put back afterwards.
    # A subshell keeps these traps away from the caller's.
    (
        policy=/usr/sbin/policy-rc.d
        backup="$policy.dispatch-backup"
        # shellcheck disable=SC2317 # called from the EXIT trap
        restore() {
            _dev_as_root rm -f "$policy"
            if [ -e "$backup" ]; then _dev_as_root mv -f "$backup" "$policy"; fi
        }
        if [ -e "$policy" ]; then
            _dev_as_root mv -f "$policy" "$backup" || exit 1
        fi
        trap restore EXIT
        trap 'exit 130' INT TERM HUP
        printf '#!/bin/sh\n# Temporary, from the dispatch dev scripts: no service starts during install.\nexit 101\n' |
            _dev_as_root tee "$policy" >/dev/null || exit 1
        _dev_as_root chmod 0755 "$policy" || exit 1
        _dev_as_root apt-get update || exit 1
        _dev_as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "$@" || exit 1
    ) || {
        _dev_err "installing $* failed (see the apt-get output above)."
        _dev_err "Install them by hand, or set DISPATCH_AMQP_URL / DISPATCH_REDIS_URL to existing servers."
        return 1
    }
}

# dev_ensure_commands COMMAND:PACKAGE...: installs the Debian package of
# each command that is not on PATH (tests start servers of their own, such
# as a redis-server on a TLS port with certificates made by openssl).
dev_ensure_commands() {
    local -a pkgs=()
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
    done
    [ "${#pkgs[@]}" -eq 0 ] && return 0
    _dev_apt_install "${pkgs[@]}"
}

# _dev_ensure_installed NEED_REDIS NEED_RABBITMQ (each 0 or 1)
_dev_ensure_installed() {
    local -a pkgs=()
    if [ "$1" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
        pkgs+=(redis-server)
    fi
    if [ "$2" = 1 ] && ! _dev_rabbitmq_sbin >/dev/null; then
        pkgs+=(rabbitmq-server)
    fi
    [ "${#pkgs[@]}" -eq 0 ] && return 0
    _dev_apt_install "${pkgs[@]}" || return 1
    if [ "$1" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
        _dev_err "redis-server is still not on PATH after installing redis-server."
        return 1
    fi
    if [ "$2" = 1 ] && ! _dev_rabbitmq_sbin >/dev/null; then
        _dev_err "RabbitMQ's scripts are still missing after installing rabbitmq-server."
        return 1
    fi
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

# True when PID is a redis-server whose process title ("redis-server
# 127.0.0.1:PORT") names PORT.
_dev_is_redis_on() {
    local comm title
    read -r comm 2>/dev/null <"/proc/$1/comm" || return 1
    [ "$comm" = redis-server ] || return 1
    title=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    case "$title " in *"127.0.0.1:$2 "*) return 0 ;; esac
    return 1
}

# PID of instance DIR's redis-server, if it is running: from the pidfile when
# that checks out, otherwise by looking for the process title.
_dev_redis_pid() {
    local dir=$1 port pid f
    port=$(_dev_state_get "$dir" REDIS_PORT)
    [ -n "$port" ] || return 1
    pid=$(cat "$dir/redis/redis.pid" 2>/dev/null) || pid=""
    if [ -n "$pid" ] && _dev_is_redis_on "$pid" "$port"; then
        printf '%s\n' "$pid"
        return 0
    fi
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        if _dev_is_redis_on "$pid" "$port"; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}

# _dev_start_redis DIR [PORT]: a new port unless PORT (a restart) is given.
_dev_start_redis() {
    local dir=$1 port=${2:-} r="$1/redis" end
    [ -n "$port" ] || _dev_pick_port port || return 1
    mkdir -p "$r"
    _dev_state_set "$dir" REDIS_PORT "$port"
    # Bound to loopback only; protected mode (the default) only restricts
    # non-loopback clients, so it never gets in the way here. Durability
    # comes from the append-only file; RDB snapshots are off, because each
    # one forks and rewrites the whole data set (seconds of stalls on a
    # small machine with a large data set).
    redis-server \
        --port "$port" \
        --bind 127.0.0.1 \
        --dir "$r" \
        --appendonly yes \
        --save "" \
        --daemonize yes \
        --pidfile "$r/redis.pid" \
        --logfile "$r/redis.log" || {
        _dev_err "redis-server failed to start"
        _dev_log_tail "$r/redis.log"
        return 1
    }
    end=$((SECONDS + 15))
    until _dev_tcp_open "$port"; do
        if [ "$SECONDS" -ge "$end" ] || ! _dev_redis_pid "$dir" >/dev/null; then
            _dev_err "Redis did not come up on 127.0.0.1:$port"
            _dev_log_tail "$r/redis.log"
            return 1
        fi
        sleep 0.1
    done
    export DISPATCH_REDIS_URL="redis://127.0.0.1:$port/"
}

_dev_stop_redis() {
    local dir=$1 port pid mode="" end
    pid=$(_dev_redis_pid "$dir") || return 0
    port=$(_dev_state_get "$dir" REDIS_PORT)
    # Throwaway data: skip the final RDB snapshot.
    [ "$(_dev_state_get "$dir" FRESH)" = 1 ] && mode=nosave
    if command -v redis-cli >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        redis-cli -h 127.0.0.1 -p "$port" shutdown $mode >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true # also a clean shutdown for Redis
    fi
    end=$((SECONDS + 10))
    while _dev_alive "$pid"; do
        if [ "$SECONDS" -ge "$end" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------

# Environment for the private node and for CLI tools talking to it. Meant for
# a subshell: it changes HOME and friends.
_dev_rabbitmq_env() {
    local dir=$1 r="$1/rabbitmq" v
    # Start from a clean slate: RABBITMQ_* settings of the calling shell
    # (or of a system-wide install) must not leak into the private node.
    for v in $(compgen -e RABBITMQ_); do unset "$v"; done
    unset NOTIFY_SOCKET # would make rabbitmq-server think it runs under systemd

    # Erlang reads its distribution cookie (and an optional .erlang file with
    # code to run at start-up) from $HOME. A HOME inside .dev gives the node and
    # our CLI calls their own cookie, independent of ~/.erlang.cookie and of
    # the system RabbitMQ's. Only these processes see this HOME; the caller's
    # (cargo's) HOME is unchanged.
    export HOME="$r/home"
    export DISPATCH_DEV_SERVICE="$r"

    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(_dev_state_get "$dir" NODE)
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT
    RABBITMQ_NODE_PORT=$(_dev_state_get "$dir" AMQP_PORT)
    export RABBITMQ_DIST_PORT
    RABBITMQ_DIST_PORT=$(_dev_state_get "$dir" DIST_PORT)
    export RABBITMQ_MNESIA_BASE="$r/mnesia"
    export RABBITMQ_LOG_BASE="$r/log"
    export RABBITMQ_PID_FILE="$r/rabbitmq.pid"
    export RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf"
    # Keep /etc/rabbitmq/{conf.d,advanced.config,rabbitmq-env.conf} out.
    export RABBITMQ_CONFIG_FILES="$r/conf.d"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$r/advanced.config"
    export RABBITMQ_CONF_ENV_FILE="$r/rabbitmq-env.conf"
    # "[]." : no plugins, in particular no management plugin and its port.
    export RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins"
    # Erlang distribution listens on loopback only.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} $(_dev_state_get "$dir" ERL_ARGS)"
    export ERL_CRASH_DUMP="$r/log/erl_crash.dump"

    # A private epmd (Erlang's node name registry) on its own loopback port,
    # instead of the shared one on 4369: node names never clash with other
    # instances or a system RabbitMQ, and stopping the instance can stop its
    # epmd too instead of leaving a daemon behind. The node starts it itself.
    export ERL_EPMD_PORT
    ERL_EPMD_PORT=$(_dev_state_get "$dir" EPMD_PORT)
    export ERL_EPMD_ADDRESS=127.0.0.1
}

# _dev_rabbitmqctl_dir DIR ARGS...: rabbitmqctl against instance DIR's node.
_dev_rabbitmqctl_dir() {
    local dir=$1 sbin
    shift
    sbin=$(_dev_state_get "$dir" RABBITMQ_SBIN)
    (
        _dev_rabbitmq_env "$dir"
        cd "$dir/rabbitmq" || exit 1
        exec "$sbin/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"
    )
}

_dev_start_rabbitmq() {
    local dir=$1 inst=$2 r="$1/rabbitmq" sbin amqp dist epmd node launcher started end remaining
    sbin=$(_dev_rabbitmq_sbin) || return 1
    _dev_pick_port amqp || return 1
    _dev_pick_port dist || return 1
    # A cluster's nodes share one epmd (DEV_RABBITMQ_EPMD_PORT), to find
    # each other by name.
    if [ -n "${DEV_RABBITMQ_EPMD_PORT:-}" ]; then
        epmd=$DEV_RABBITMQ_EPMD_PORT
    else
        _dev_pick_port epmd || return 1
    fi
    _dev_state_set "$dir" ERL_ARGS "${DEV_RABBITMQ_ERL_ARGS:-}"
    # The node name stays the same across runs: RabbitMQ's database is tied to
    # it, so a changing name (e.g. one containing the port) would lose the
    # data of the persistent "run" instance. Uniqueness comes from the private
    # epmd above. Dots are not allowed in short node names.
    node="dispatch-${inst//./-}@localhost"
    _dev_state_set "$dir" RABBITMQ_SBIN "$sbin"
    _dev_state_set "$dir" NODE "$node"
    _dev_state_set "$dir" AMQP_PORT "$amqp"
    _dev_state_set "$dir" DIST_PORT "$dist"
    _dev_state_set "$dir" EPMD_PORT "$epmd"

    mkdir -p "$r/home" "$r/mnesia" "$r/log" "$r/conf.d"
    if [ -n "${DEV_RABBITMQ_COOKIE:-}" ]; then
        # A cluster's nodes share one cookie.
        rm -f "$r/home/.erlang.cookie"
        (
            umask 077
            printf '%s' "$DEV_RABBITMQ_COOKIE" >"$r/home/.erlang.cookie"
        )
        chmod 400 "$r/home/.erlang.cookie"
    elif [ ! -s "$r/home/.erlang.cookie" ]; then
        (
            umask 077
            head -c 24 /dev/urandom | od -An -vtx1 | tr -d ' \n' >"$r/home/.erlang.cookie"
        )
        chmod 400 "$r/home/.erlang.cookie"
    fi
    cat >"$r/rabbitmq.conf" <<EOF
# Generated by scripts/lib/services.sh; rewritten on every start.
listeners.tcp.default = 127.0.0.1:$amqp
# The log file in log/ is enough; do not copy it to console.log.
log.console = false
EOF
    # Classic queues' second storage format: far fewer writes per
    # persistent message (the p99 of a confirmed publish depends on it).
    # The default from RabbitMQ 3.12; a setting in 3.10 and 3.11, unknown
    # (and fatal) before. A server default, not a queue argument, so queues
    # declared before keep working.
    local version
    version=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || true)
    if [ -n "$version" ] && dpkg --compare-versions "$version" ge 3.10 &&
        dpkg --compare-versions "$version" lt 3.12; then
        printf 'classic_queue.default_version = 2\n' >>"$r/rabbitmq.conf"
    fi
    printf '[].\n' >"$r/enabled_plugins"
    printf '# Intentionally empty: keeps /etc/rabbitmq/rabbitmq-env.conf out.\n' >"$r/rabbitmq-env.conf"
    rm -f "$r/rabbitmq.pid"

    # setsid: own session, so a Ctrl-C in the terminal does not reach the
    # node directly; the caller's exit trap stops it in an orderly way.
    (
        _dev_rabbitmq_env "$dir"
        cd "$r" || exit 1
        exec setsid "$sbin/rabbitmq-server"
    ) >"$r/log/console.log" 2>&1 </dev/null &
    launcher=$!

    started=$SECONDS
    end=$((SECONDS + DEV_SERVICES_RABBITMQ_TIMEOUT))
    until _dev_tcp_open "$amqp"; do
        # $launcher covers the moment before the tagged processes exist.
        if ! kill -0 "$launcher" 2>/dev/null && [ -z "$(_dev_tagged_pids "$r")" ]; then
            _dev_err "RabbitMQ exited during start-up."
            _dev_log_tail "$r/log/console.log" "$r/log/$node.log"
            return 1
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            _dev_err "RabbitMQ did not accept connections on 127.0.0.1:$amqp within ${DEV_SERVICES_RABBITMQ_TIMEOUT}s."
            _dev_log_tail "$r/log/console.log" "$r/log/$node.log"
            return 1
        fi
        sleep 0.5
    done
    # The AMQP listener opens near the end of boot; confirm the node reports
    # itself fully started (this also proves the CLI can reach it).
    remaining=$((end - SECONDS))
    [ "$remaining" -ge 10 ] || remaining=10
    if ! _dev_rabbitmqctl_dir "$dir" -q await_startup --timeout "$remaining" >/dev/null 2>"$r/log/await_startup.err"; then
        _dev_err "RabbitMQ node $node is listening but did not finish starting."
        _dev_log_tail "$r/log/await_startup.err" "$r/log/$node.log"
        return 1
    fi
    _dev_log "RabbitMQ node $node ready after $((SECONDS - started))s"
    export DISPATCH_AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp/%2f"
}

_dev_stop_rabbitmq() {
    local tag="$1/rabbitmq" beams
    [ -n "$(_dev_tagged_pids "$tag")" ] || return 0
    # RabbitMQ treats SIGTERM as a graceful stop (like `rabbitmqctl stop`),
    # and sending it avoids booting yet another Erlang VM for the CLI.
    beams=$(_dev_tagged_pids "$tag" beam.smp)
    if [ -n "$beams" ]; then
        # shellcheck disable=SC2086
        kill -TERM $beams 2>/dev/null || true
        _dev_wait_untagged "$tag" 60 beam.smp || true
    fi
    # Whatever is left: the rabbitmq-server wrapper script, the private epmd,
    # or a node that ignored SIGTERM.
    _dev_kill_tagged "$tag" 10
}

# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

# Stop the services of instance DIR (if running) and release it.
_dev_stop_instance() {
    local dir=$1
    _dev_stop_redis "$dir"
    _dev_stop_rabbitmq "$dir"
    if [ "$(_dev_state_get "$dir" EPHEMERAL)" = 1 ]; then
        rm -rf "$dir"
    else
        rm -f "$dir/state"
    fi
}

# Stop services left behind by earlier runs of NAME whose script died without
# cleaning up (kill -9, closed terminal, ...).
_dev_reap_orphans() {
    local name=$1 dir
    for dir in "$_DEV_DIR/$name" "$_DEV_DIR/$name".*; do
        [ -d "$dir" ] || continue
        if [ -f "$dir/state" ]; then
            _dev_owner_alive "$dir" && continue
            _dev_log "cleaning up after an earlier run that did not stop its services (${dir#"$_DEV_REPO_ROOT"/})"
            _dev_stop_instance "$dir"
        elif [ "$dir" != "$_DEV_DIR/$name" ]; then
            rm -rf "$dir" # leftover of a throwaway instance
        fi
    done
}

# The instance directory of NAME that this shell brought up, if any.
_dev_own_instance() {
    local dir
    for dir in "$_DEV_DIR/$1" "$_DEV_DIR/$1.$$"; do
        [ -f "$dir/state" ] || continue
        [ "$(_dev_state_get "$dir" OWNER_PID)" = "$$" ] || continue
        _dev_owner_alive "$dir" || continue
        printf '%s\n' "$dir"
        return 0
    done
    return 1
}

dev_services_up() {
    local name=${1:-} fresh=0 need_redis=0 need_rabbitmq=0 dir inst
    case "$name" in
    '' | *[!A-Za-z0-9_-]*)
        _dev_err "usage: dev_services_up NAME [--fresh]  (NAME: letters, digits, - and _)"
        return 2
        ;;
    esac
    [ "${2:-}" = --fresh ] && fresh=1

    DEV_SERVICES_AMQP_SOURCE=external
    DEV_SERVICES_REDIS_SOURCE=external
    [ -n "${DISPATCH_REDIS_URL:-}" ] || need_redis=1
    [ -n "${DISPATCH_AMQP_URL:-}" ] || need_rabbitmq=1
    [ "$need_redis$need_rabbitmq" = 00 ] && return 0

    if dir=$(_dev_own_instance "$name"); then
        _dev_err "dev_services_up $name: already up in this shell (${dir#"$_DEV_REPO_ROOT"/})"
        return 1
    fi

    _dev_ensure_installed "$need_redis" "$need_rabbitmq" || return 1
    mkdir -p "$_DEV_DIR"
    _dev_reap_orphans "$name"

    # .dev/NAME is the normal (and, for "run", persistent) home of the
    # instance. If another live script is using it, start a throwaway
    # instance next to it rather than sharing or disturbing it.
    inst=$name
    if [ -f "$_DEV_DIR/$name/state" ]; then
        inst="$name.$$"
        fresh=1
        _dev_log "$name services are in use by PID $(_dev_state_get "$_DEV_DIR/$name" OWNER_PID); starting a separate throwaway instance"
    fi
    dir="$_DEV_DIR/$inst"
    [ "$fresh" = 1 ] && rm -rf "$dir"
    mkdir -p "$dir"
    : >"$dir/state"
    _dev_state_set "$dir" OWNER_PID "$$"
    _dev_state_set "$dir" OWNER_START "$(_dev_proc_start $$)"
    _dev_state_set "$dir" FRESH "$fresh"
    [ "$inst" = "$name" ] || _dev_state_set "$dir" EPHEMERAL 1

    # On failure, whatever did start is left for dev_services_down (callers
    # set their trap before calling dev_services_up).
    if [ "$need_redis" = 1 ]; then
        _dev_start_redis "$dir" || return 1
        DEV_SERVICES_REDIS_SOURCE=private
    fi
    if [ "$need_rabbitmq" = 1 ]; then
        _dev_start_rabbitmq "$dir" "$inst" || return 1
        DEV_SERVICES_AMQP_SOURCE=private
    fi
    if [ "$need_redis$need_rabbitmq" = 11 ]; then
        export DISPATCH_DEV_SERVICES_DIR="$dir"
    fi
}

# dev_services_restart DIR rabbitmq|redis [SECS]: stop the service, leave it
# down SECS seconds (default 1), and start it again on the same port with the
# same data, as an outage the clients see
# (connections dropped, then refused, then accepted again). RabbitMQ
# restarts its application inside the running node (durable queues and
# persistent messages are recovered from disk); Redis shuts down (the
# append-only file is flushed) and starts again from its files.
dev_services_restart() {
    local dir=$1 service=$2 down=${3:-1} port end
    [ -f "$dir/state" ] || {
        _dev_err "dev_services_restart: no instance in $dir"
        return 1
    }
    case "$service" in
    rabbitmq)
        port=$(_dev_state_get "$dir" AMQP_PORT)
        _dev_rabbitmqctl_dir "$dir" -q stop_app >/dev/null || return 1
        sleep "$down"
        _dev_rabbitmqctl_dir "$dir" -q start_app >/dev/null || return 1
        end=$((SECONDS + 30))
        until _dev_tcp_open "$port"; do
            [ "$SECONDS" -lt "$end" ] || {
                _dev_err "RabbitMQ did not come back on 127.0.0.1:$port"
                return 1
            }
            sleep 0.1
        done
        ;;
    redis)
        port=$(_dev_state_get "$dir" REDIS_PORT)
        _dev_stop_redis "$dir"
        sleep "$down"
        _dev_start_redis "$dir" "$port" || return 1
        ;;
    *)
        _dev_err "dev_services_restart: rabbitmq or redis, not '$service'"
        return 2
        ;;
    esac
}

dev_services_down() {
    local name=${1:-} dir
    dir=$(_dev_own_instance "$name") || return 0
    _dev_stop_instance "$dir"
}

# One line describing the services in use, passwords masked.
dev_services_describe() {
    printf 'RabbitMQ %s (%s), Redis %s (%s)\n' \
        "$(dev_redact_url "${DISPATCH_AMQP_URL:-unset}")" "${DEV_SERVICES_AMQP_SOURCE:-external}" \
        "$(dev_redact_url "${DISPATCH_REDIS_URL:-unset}")" "${DEV_SERVICES_REDIS_SOURCE:-external}"
}

# rabbitmqctl against the private node of NAME, e.g. `dev_rabbitmqctl test status`.
dev_rabbitmqctl() {
    local dir
    dir=$(_dev_own_instance "${1:-}") || dir="$_DEV_DIR/${1:-}"
    shift
    if [ -z "$(_dev_state_get "$dir" NODE)" ]; then
        _dev_err "no private RabbitMQ node recorded in ${dir#"$_DEV_REPO_ROOT"/}"
        return 1
    fi
    _dev_rabbitmqctl_dir "$dir" "$@"
}

# ---------------------------------------------------------------------------
# Redis Cluster (the cluster suite)
# ---------------------------------------------------------------------------

# dev_redis_cluster_up DIR: a Redis Cluster of 3 masters and 3 replicas on
# loopback, with data under DIR (wiped first), made with `redis-cli
# --cluster create`. A node taken for dead after 2 s (cluster-node-timeout),
# so that a killed master's replica takes over within seconds. Exports
# DISPATCH_TEST_REDIS_CLUSTER_URL (a seed node) and
# DISPATCH_TEST_REDIS_CLUSTER_DIR (for dev_redis_cluster_down, and for
# tests that kill and restart nodes: DIR/PORTS lists them).
dev_redis_cluster_up() {
    local dir=$1 i port bus end
    local -a ports=() nodes=()
    dev_redis_cluster_down "$dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    # Absolute: redis-server changes to its --dir before opening its files.
    dir=$(cd "$dir" && pwd)
    for i in 1 2 3 4 5 6; do
        _dev_pick_port port || return 1
        _dev_pick_port bus || return 1
        _dev_redis_cluster_node "$dir" "$port" "$bus" || {
            _dev_err "redis-server (cluster node $port) failed to start"
            return 1
        }
        printf '%s %s\n' "$port" "$bus" >>"$dir/PORTS"
        ports+=("$port")
        nodes+=("127.0.0.1:$port")
    done
    for port in "${ports[@]}"; do
        end=$((SECONDS + 15))
        until _dev_tcp_open "$port"; do
            [ "$SECONDS" -lt "$end" ] || {
                _dev_err "Redis cluster node did not come up on 127.0.0.1:$port"
                _dev_log_tail "$dir/$port/redis.log"
                return 1
            }
            sleep 0.1
        done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1 || {
        _dev_err "redis-cli --cluster create failed"
        _dev_log_tail "$dir/create.log"
        return 1
    }
    end=$((SECONDS + 30))
    for port in "${ports[@]}"; do
        until redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
            [ "$SECONDS" -lt "$end" ] || {
                _dev_err "the Redis Cluster did not become ok"
                return 1
            }
            sleep 0.2
        done
    done
    export DISPATCH_TEST_REDIS_CLUSTER_URL="redis://127.0.0.1:${ports[0]}/"
    export DISPATCH_TEST_REDIS_CLUSTER_DIR="$dir"
}

# _dev_redis_cluster_node DIR PORT BUS: starts (or restarts, from its files)
# one node of the cluster in DIR.
_dev_redis_cluster_node() {
    local dir=$1 port=$2 bus=$3
    mkdir -p "$dir/$port"
    redis-server \
        --port "$port" \
        --cluster-port "$bus" \
        --bind 127.0.0.1 \
        --cluster-enabled yes \
        --cluster-config-file "$dir/$port/nodes.conf" \
        --cluster-node-timeout 2000 \
        --dir "$dir/$port" \
        --appendonly yes \
        --save "" \
        --daemonize yes \
        --pidfile "$dir/$port/redis.pid" \
        --logfile "$dir/$port/redis.log"
}

# dev_redis_cluster_kill DIR PORT: SIGKILL for the node on PORT, then waits
# until the cluster is ok again without it (its replica promoted).
dev_redis_cluster_kill() {
    local dir=$1 port=$2 other end
    kill -KILL "$(cat "$dir/$port/redis.pid")" 2>/dev/null || return 1
    other=$(awk -v p="$port" '$1 != p {print $1; exit}' "$dir/PORTS")
    sleep 1
    end=$((SECONDS + 30))
    until redis-cli -p "$other" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
        [ "$SECONDS" -lt "$end" ] || {
            _dev_err "the Redis Cluster did not recover from losing 127.0.0.1:$port"
            return 1
        }
        sleep 0.2
    done
}

# dev_redis_cluster_restart DIR PORT: starts the node on PORT again (it
# comes back as a replica of the master promoted in its place) and waits
# until every node sees the cluster ok.
dev_redis_cluster_restart() {
    local dir=$1 port=$2 bus p end
    bus=$(awk -v p="$port" '$1 == p {print $2}' "$dir/PORTS")
    _dev_redis_cluster_node "$dir" "$port" "$bus" || return 1
    end=$((SECONDS + 30))
    while read -r p _; do
        until redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
            [ "$SECONDS" -lt "$end" ] || {
                _dev_err "the Redis Cluster is not ok after restarting 127.0.0.1:$port"
                return 1
            }
            sleep 0.2
        done
    done <"$dir/PORTS"
}

# dev_redis_cluster_down DIR: stops every node of the cluster in DIR.
dev_redis_cluster_down() {
    local dir=$1 port bus pid
    [ -f "$dir/PORTS" ] || return 0
    dir=$(cd "$dir" && pwd)
    while read -r port bus; do
        pid=$(cat "$dir/$port/redis.pid" 2>/dev/null) || continue
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    done <"$dir/PORTS"
    rm -f "$dir/PORTS"
}

# ---------------------------------------------------------------------------
# RabbitMQ cluster (the cluster suite)
# ---------------------------------------------------------------------------

# dev_rabbitmq_cluster_up DIR: three RabbitMQ nodes on loopback, with data
# under DIR/n1..n3 (wiped first), joined with `rabbitmqctl join_cluster`. They
# share one private epmd and cookie, and run with busy-waiting off (+sbwt
# none), so that three Erlang VMs share two cores. Exports
# DISPATCH_TEST_AMQP_CLUSTER_URLS (the three nodes, comma-separated) and
# DISPATCH_TEST_AMQP_CLUSTER_DIR (for dev_rabbitmq_cluster_down, and for
# tests that stop and start a node: dev_rabbitmq_node DIR/nN stop|start).
dev_rabbitmq_cluster_up() {
    local dir=$1 i epmd cookie first urls="" saved_url=${DISPATCH_AMQP_URL:-}
    # Nodes an earlier run left behind (killed before its exit trap ran).
    dev_rabbitmq_cluster_down "$dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    _dev_pick_port epmd || return 1
    cookie=$(head -c 24 /dev/urandom | od -An -vtx1 | tr -d ' \n')
    for i in 1 2 3; do
        mkdir -p "$dir/n$i"
        : >"$dir/n$i/state"
        _dev_state_set "$dir/n$i" FRESH 1
        DEV_RABBITMQ_EPMD_PORT=$epmd DEV_RABBITMQ_COOKIE=$cookie \
            DEV_RABBITMQ_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none" \
            _dev_start_rabbitmq "$dir/n$i" "cluster-n$i" || return 1
        urls="$urls${urls:+,}$DISPATCH_AMQP_URL"
    done
    first=$(_dev_state_get "$dir/n1" NODE)
    for i in 2 3; do
        _dev_rabbitmqctl_dir "$dir/n$i" -q stop_app >/dev/null &&
            _dev_rabbitmqctl_dir "$dir/n$i" -q join_cluster "$first" >/dev/null &&
            _dev_rabbitmqctl_dir "$dir/n$i" -q start_app >/dev/null || {
            _dev_err "RabbitMQ node n$i could not join $first"
            return 1
        }
    done
    export DISPATCH_AMQP_URL=$saved_url
    export DISPATCH_TEST_AMQP_CLUSTER_URLS=$urls
    export DISPATCH_TEST_AMQP_CLUSTER_DIR=$dir
}

# dev_rabbitmq_node NODEDIR stop|start: stops a cluster node's RabbitMQ
# application (the node stays in the cluster, its queues' replicas
# elsewhere take over), or starts it again.
dev_rabbitmq_node() {
    local dir=$1 port end
    case "$2" in
    stop) _dev_rabbitmqctl_dir "$dir" -q stop_app >/dev/null ;;
    start)
        _dev_rabbitmqctl_dir "$dir" -q start_app >/dev/null || return 1
        port=$(_dev_state_get "$dir" AMQP_PORT)
        end=$((SECONDS + 60))
        until _dev_tcp_open "$port"; do
            [ "$SECONDS" -lt "$end" ] || return 1
            sleep 0.2
        done
        ;;
    *) return 2 ;;
    esac
}

# dev_rabbitmq_cluster_down DIR: stops the three nodes.
dev_rabbitmq_cluster_down() {
    local dir=$1 i
    [ -d "$dir" ] || return 0
    # Absolute, as dev_rabbitmq_cluster_up tagged the nodes' processes.
    dir=$(cd "$dir" && pwd)
    for i in 1 2 3; do
        [ -d "$dir/n$i" ] && _dev_stop_rabbitmq "$dir/n$i"
    done
    return 0
}
