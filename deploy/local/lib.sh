# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables here are used by the scripts that source it
# Shared helpers for the deploy/local scripts. Source it; do not run it.
#
# The caller sets PROG (the prefix of every message) before sourcing this file.
# Everything is located from this file's own place, never from the caller's cwd.

ONCE_LOCAL_DIR=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
REPO_ROOT=$(cd "$ONCE_LOCAL_DIR/../.." && pwd)
LOCAL="$REPO_ROOT/.local"

: "${PROG:=local}"

# Ports and names. The ports can be overridden for a second checkout on the same machine.
PG_PORT="${ONCE_LOCAL_PG_PORT:-55432}"
KAFKA_PORT="${ONCE_LOCAL_KAFKA_PORT:-19092}"
PG_DB=once
PG_USER=postgres
PG_BIN=/usr/lib/postgresql/15/bin
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
KAFKA_URL="tcp://127.0.0.1:$KAFKA_PORT"

# The TLS instances (`services up --tls`): a PostgreSQL cluster that takes TLS connections only,
# and a Tansu broker whose clients connect through a TLS endpoint (stunnel) on KAFKA_TLS_PORT;
# the broker itself listens on KAFKA_TLS_INNER_PORT, on loopback, and advertises the TLS port.
PG_TLS_PORT="${ONCE_LOCAL_PG_TLS_PORT:-$((PG_PORT + 20))}"
KAFKA_TLS_PORT="${ONCE_LOCAL_KAFKA_TLS_PORT:-$((KAFKA_PORT + 20))}"
KAFKA_TLS_INNER_PORT="${ONCE_LOCAL_KAFKA_TLS_INNER_PORT:-$((KAFKA_TLS_PORT + 1))}"
TLS_DIR="$LOCAL/tls"            # the local CA, the server and client certificates, stunnel's files

VENV="$LOCAL/venv"
TANSU="$LOCAL/bin/tansu"
TANSU_LOG="$LOCAL/tansu.log"
TANSU_PID="$LOCAL/tansu.pid"
SERVICES_ENV="$LOCAL/services.env"
PG_AREA_FILE="$LOCAL/pg.area"   # records where `services up` put the PostgreSQL cluster

# Topics `services up` creates (name:partitions). Input topics (CONTRACT §1), output and
# dead-letter topics (CONTRACT §3).
ONCE_TOPICS=(
    completion-events:4
    batch-action-events:4
    job-events:4
    credit-ledger:4
    device-dispatch:4
    jobs-created:4
    once.dead-letters:4
)

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# Print the last lines of a log file to stderr, indented, if it exists.
log_tail() {
    local file=$1 lines=${2:-30}
    if [[ -r $file ]]; then
        printf '%s: --- last %s lines of %s ---\n' "$PROG" "$lines" "$file" >&2
        tail -n "$lines" "$file" | sed 's/^/    /' >&2
        printf '%s: ---\n' "$PROG" >&2
    else
        printf '%s: (no log at %s)\n' "$PROG" "$file" >&2
    fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016  # $1 is the inner shell's argument
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# True when $1 is a live process whose command line contains $2.
pid_alive() {
    local pid=$1 needle=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

# Run a command as the postgres user, from a directory it can read.
as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

# The directory that holds the PostgreSQL cluster (data/, run/ for the socket, postgres.log).
# It is .local/pg in the repository when the postgres user can reach it; otherwise (a repository
# under /root, say) a directory under /var/tmp named after a hash of the repository path.
pg_area() {
    if [[ -s $PG_AREA_FILE ]]; then
        cat "$PG_AREA_FILE"
        return
    fi
    pg_area_choose
}

pg_area_choose() {
    mkdir -p "$LOCAL"
    if id postgres >/dev/null 2>&1 && as_postgres test -x "$LOCAL" 2>/dev/null; then
        printf '%s\n' "$LOCAL/pg"
    else
        local hash
        hash=$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)
        printf '%s\n' "/var/tmp/once-$hash/pg"
    fi
}

pg_url() { printf 'postgresql://%s@127.0.0.1:%s/%s' "$PG_USER" "$PG_PORT" "$PG_DB"; }

# Make swift reachable.
ensure_swift_on_path() {
    if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    fi
}
