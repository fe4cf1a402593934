#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for Neutrino's tests, benchmarks and CI.
#
#   scripts/pg-cluster.sh install
#       Installs Debian's `postgresql` package when no initdb is found
#       (sudo when not root), without leaving any system service or cluster
#       behind: service starts are refused during the install and the
#       `main` cluster the package makes is dropped afterwards.
#
#   scripts/pg-cluster.sh start [--tcp] [--fast | --async-commit] DIR
#       Creates a cluster in DIR (made if missing; must be empty), starts it
#       and prints the sqlx URL to reach it on stdout (nothing else goes to
#       stdout; the URL is also written to DIR/url):
#           postgres://neutrino@localhost/neutrino?host=DIR     (unix socket)
#           postgres://neutrino@127.0.0.1:PORT/neutrino         (--tcp)
#       The server listens on a unix socket in DIR only, or with --tcp also
#       on 127.0.0.1 at a free port. Local and loopback connections are
#       trusted; the role `neutrino` is the cluster's superuser and the
#       database `neutrino` is made empty. The cluster is durable (fsync on)
#       unless --fast: fsync, synchronous_commit and full_page_writes off, for
#       tests and benchmarks that do not care about crashes of the machine.
#       --async-commit keeps fsync on and turns synchronous_commit off: a
#       commit returns before its WAL is flushed (the WAL writer flushes
#       within ~3 x wal_writer_delay), so a crash of the machine loses the
#       last moments of commits but never corrupts the database; the
#       closest match to SQLite's default synchronous=NORMAL in WAL mode.
#       Collation is C (bytewise, like SQLite's BINARY), encoding UTF8.
#
#   scripts/pg-cluster.sh stop DIR
#       Stops the cluster in DIR (fast shutdown) and removes DIR. Nothing to
#       do if DIR is gone; refuses a DIR that `start` did not make.
#
# PostgreSQL refuses to run as root: when run as root the server runs as a
# system user (neutrino-pg, made if missing) that owns DIR; root's clients
# reach it through the socket all the same. DIR's parents must then be
# searchable by that user (/tmp is). The socket's path, DIR/.s.PGSQL.PORT,
# must fit in 107 bytes, so keep DIR short.
#
# Environment: PG_BINDIR picks the PostgreSQL binaries (default: the highest
# /usr/lib/postgresql/*/bin); PG_CLUSTER_OS_USER the system user root runs
# the server as (default neutrino-pg).

set -euo pipefail

readonly ROLE=neutrino             # superuser made by initdb, in the URL
readonly DATABASE=neutrino         # database made by start
readonly OS_USER=${PG_CLUSTER_OS_USER:-neutrino-pg}
readonly MARKER=.pg-cluster        # file in DIR that says start made it
readonly SOCKET_PORT=5432          # socket-only clusters: sqlx's default port
readonly SOCKET_NAME=/.s.PGSQL.65535  # the longest name a socket in DIR gets

# Our own psql/createdb calls must not pick up the caller's libpq settings.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE PGPASSWORD PGSSLMODE

die() {
    echo "pg-cluster: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 install | start [--tcp] [--fast | --async-commit] DIR | stop DIR" >&2
    exit 2
}

# The directory of the highest PostgreSQL version's binaries, or nothing.
find_bindir() {
    if [[ -n ${PG_BINDIR:-} ]]; then
        [[ -x $PG_BINDIR/initdb ]] || die "PG_BINDIR=$PG_BINDIR has no initdb"
        echo "$PG_BINDIR"
        return
    fi
    local initdb
    initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    [[ -x $initdb ]] && dirname "$initdb"
    return 0
}

# Runs a command as the user that owns the server (DIR's owner), from DIR
# so that a cwd the server user cannot read (/root) does not matter.
# Uses the globals DIR and RUN_AS ('' when that is us).
as_server() {
    if [[ -n $RUN_AS ]]; then
        (cd "$DIR" && runuser -u "$RUN_AS" -- "$@")
    else
        (cd "$DIR" && "$@")
    fi
}

# Percent-encodes a path for a URL's query string (bytewise; '/' kept).
urlencode() {
    local LC_ALL=C s=$1 out='' c hex i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~/-]) out+=$c ;;
            *) printf -v hex '%%%02X' "'$c"; out+=$hex ;;
        esac
    done
    printf '%s' "$out"
}

# A TCP port on 127.0.0.1 that nothing listens on now, below Linux's
# ephemeral range so outgoing connections do not take it meanwhile. The
# server may still lose a race for it: start retries with another.
pick_port() {
    local port i
    for ((i = 0; i < 50; i++)); do
        port=$((20000 + RANDOM % 12000))
        if command -v ss >/dev/null 2>&1 && ss -Htln "sport = :$port" | grep -q .; then
            continue
        fi
        echo "$port"
        return
    done
    die "no free TCP port found"
}

# ---- install -------------------------------------------------------------

cmd_install() {
    if [[ -n $(find_bindir) ]]; then
        echo "pg-cluster: PostgreSQL is installed ($(find_bindir))" >&2
        return
    fi
    local sudo=() policy=/usr/sbin/policy-rc.d own_policy='' before after c
    ((EUID == 0)) || sudo=(sudo)

    # Clusters that exist already are not ours to drop, nor is a service
    # enabled already ours to disable.
    before=$(pg_lsclusters -h 2>/dev/null | awk '{print $1 "/" $2}' || true)
    local systemd='' was_enabled=''
    if [[ -d /run/systemd/system ]]; then
        systemd=1
        ! systemctl is-enabled --quiet postgresql.service 2>/dev/null || was_enabled=1
    fi

    # Refuse every service start while the package installs (invoke-rc.d and
    # deb-systemd-invoke honour policy-rc.d's 101), unless a policy is in
    # place already (Docker images ship one that does the same).
    if [[ ! -e $policy ]]; then
        own_policy=$policy
        # shellcheck disable=SC2064 # expand now: the path and sudo are fixed
        trap "${sudo[*]} rm -f '$policy'" EXIT
        printf '#!/bin/sh\n# pg-cluster.sh install: no service starts\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
    fi

    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends postgresql >&2

    # Debian's package makes (and would start) a `main` cluster: drop every
    # cluster the install made, stopping it first should it be running.
    after=$(pg_lsclusters -h 2>/dev/null | awk '{print $1 "/" $2}' || true)
    for c in $after; do
        if ! grep -qxF "$c" <<<"$before"; then
            echo "pg-cluster: dropping the cluster the package made: $c" >&2
            "${sudo[@]}" pg_dropcluster --stop "${c%/*}" "${c#*/}"
        fi
    done

    # On systemd the package also enables postgresql.service (which starts
    # every cluster at boot): we made none, so it goes too.
    if [[ -n $systemd && -z $was_enabled ]]; then
        "${sudo[@]}" systemctl disable --now --quiet postgresql.service 2>/dev/null || true
    fi

    if [[ -n $own_policy ]]; then
        "${sudo[@]}" rm -f "$own_policy"
        trap - EXIT
    fi
    [[ -n $(find_bindir) ]] || die "installed postgresql but found no initdb"
    echo "pg-cluster: installed PostgreSQL ($(find_bindir))" >&2
}

# ---- start ---------------------------------------------------------------

cmd_start() {
    local tcp='' fast='' async_commit='' arg
    DIR=''
    for arg in "$@"; do
        case $arg in
            --tcp) tcp=1 ;;
            --fast) fast=1 ;;
            --async-commit) async_commit=1 ;;
            -*) usage ;;
            *) [[ -z $DIR ]] || usage; DIR=$arg ;;
        esac
    done
    [[ -n $DIR ]] || usage
    [[ -z $fast || -z $async_commit ]] || die "--fast already turns synchronous_commit off: give one of them"

    local bindir
    bindir=$(find_bindir)
    [[ -n $bindir ]] || die "no PostgreSQL found (run: $0 install)"

    local created=''
    [[ -e $DIR ]] || created=1
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    [[ -z $(ls -A "$DIR") ]] || die "$DIR is not empty"
    # 107 bytes for the socket's path (sun_path less its NUL).
    if ((${#DIR} + ${#SOCKET_NAME} > 107)); then
        [[ -z $created ]] || rmdir "$DIR"
        die "$DIR is too long for a unix socket path"
    fi
    RUN_AS=''
    ((EUID != 0)) || RUN_AS=$OS_USER
    # From here on `stop DIR` cleans up, whatever fails.
    printf 'bindir=%s\nrun_as=%s\n' "$bindir" "$RUN_AS" >"$DIR/$MARKER"
    # Only the server's user (and root) may use the socket: trust auth.
    chmod 700 "$DIR"

    if [[ -n $RUN_AS ]]; then
        if ! id -u "$RUN_AS" >/dev/null 2>&1; then
            # Another start may make it at the same time: fine if it exists.
            useradd --system --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin --user-group "$RUN_AS" 2>/dev/null ||
                id -u "$RUN_AS" >/dev/null || die "cannot create user $RUN_AS"
        fi
        chown "$RUN_AS:" "$DIR"
        runuser -u "$RUN_AS" -- test -w "$DIR" ||
            die "$RUN_AS cannot reach $DIR: choose a DIR whose parents it can search" \
                "(e.g. under /tmp); remove it with: $0 stop $DIR"
    fi

    local data=$DIR/data log=$DIR/postgres.log
    # Whatever fails from here on, leave no server running (STARTED is a
    # global: the trap runs after the function's locals are gone).
    STARTED=''
    # shellcheck disable=SC2064 # expand now: these are fixed
    trap "[[ -z \$STARTED ]] || as_server '$bindir/pg_ctl' -D '$data' -s -m immediate stop || true" EXIT

    local initdb_opts=(-D "$data" -U "$ROLE" --auth=trust --encoding=UTF8 --locale=C)
    [[ -z $fast ]] || initdb_opts+=(--no-sync)
    if ! as_server "$bindir/initdb" "${initdb_opts[@]}" >"$DIR/initdb.log" 2>&1; then
        cat "$DIR/initdb.log" >&2
        die "initdb failed; remove $DIR with: $0 stop $DIR"
    fi
    echo "include = 'pg-cluster.conf'" >>"$data/postgresql.conf"

    # Settings, then start; with --tcp, again on another port if the one
    # picked was taken meanwhile.
    local port attempt listen
    for attempt in 1 2 3 4 5; do
        if [[ -n $tcp ]]; then
            port=$(pick_port)
            listen=127.0.0.1
        else
            port=$SOCKET_PORT
            listen=''
        fi
        {
            echo "# Written by scripts/pg-cluster.sh start."
            echo "listen_addresses = '$listen'"
            echo "port = $port"
            echo "unix_socket_directories = '$DIR'"
            echo "max_connections = 200"
            if [[ -n $fast ]]; then
                echo "fsync = off"
                echo "synchronous_commit = off"
                echo "full_page_writes = off"
            fi
            [[ -z $async_commit ]] || echo "synchronous_commit = off"
        } | as_server tee "$data/pg-cluster.conf" >/dev/null
        rm -f "$log" # so that the bind check below reads this attempt only
        STARTED=1
        if as_server "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 -s start >&2; then
            break
        fi
        STARTED=''
        if [[ -n $tcp ]] && ((attempt < 5)) && grep -q 'could not bind\|could not create any TCP' "$log"; then
            echo "pg-cluster: port $port taken, trying another" >&2
            continue
        fi
        tail -n 20 "$log" >&2
        die "the server did not start (log: $log); remove $DIR with: $0 stop $DIR"
    done

    "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$port" -U "$ROLE" -d postgres \
        -c "CREATE DATABASE $DATABASE" >&2

    local url
    if [[ -n $tcp ]]; then
        url="postgres://$ROLE@127.0.0.1:$port/$DATABASE"
    else
        url="postgres://$ROLE@localhost/$DATABASE?host=$(urlencode "$DIR")"
    fi
    echo "$url" >"$DIR/url"
    trap - EXIT
    echo "$url"
}

# ---- stop ----------------------------------------------------------------

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    DIR=$1
    if [[ ! -e $DIR ]]; then
        echo "pg-cluster: $DIR does not exist: nothing to stop" >&2
        return
    fi
    DIR=$(cd "$DIR" && pwd -P)
    [[ -f $DIR/$MARKER ]] || die "$DIR was not made by $0 start: not touching it"

    local data=$DIR/data bindir='' key value
    while IFS='=' read -r key value; do
        [[ $key != bindir ]] || bindir=$value
    done <"$DIR/$MARKER"
    [[ -x $bindir/pg_ctl ]] || bindir=$(find_bindir)

    if [[ -f $data/PG_VERSION ]]; then
        RUN_AS=''
        local owner
        owner=$(stat -c %U "$data")
        if [[ $owner != "$(id -un)" ]]; then
            ((EUID == 0)) || die "$DIR belongs to $owner: stop it as root or $owner"
            RUN_AS=$owner
        fi
        # pg_ctl status: 0 running, 3 not running.
        if as_server "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
            as_server "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 -s stop >&2 ||
                as_server "$bindir/pg_ctl" -D "$data" -m immediate -w -t 60 -s stop >&2
        fi
    fi
    rm -rf -- "$DIR"
}

case ${1:-} in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
