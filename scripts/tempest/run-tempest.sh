#!/usr/bin/env bash
# Runs upstream tempest's network API tests (`tempest.api.network` of the
# `tempest` package on PyPI) against a fresh Neutrino server, with Neutrino's
# built-in identity service and tempest's dynamic credentials.
#
#   scripts/tempest/run-tempest.sh [options]
#
#   --venv DIR          virtualenv to (re)use                 [target/tempest-venv]
#   --work DIR          tempest workspace: tempest.conf, tempest.log,
#                       neutrino.log, stestr repository, results.subunit
#                       (emptied at the start of every run)   [target/tempest]
#   --report FILE       summary written here                  [target/tempest-report.txt]
#   --regex RE          which tests                           [^tempest\.api\.network]
#   --concurrency N     stestr workers; 1 runs serially       [2]
#   --timeout S         stop tempest after S seconds          [3600]
#   --set SEC.KEY=VAL   set a tempest.conf option (repeatable), for example
#                       --set enforce_scope.neutron=false
#   --database-url URL  the server's database (an empty PostgreSQL database or
#                       schema, say)                   [SQLite in the data dir]
#   --install-only      only make sure the virtualenv exists, then exit
#
# Steps:
#   1. a virtualenv with tempest==TEMPEST_VERSION and every dependency pinned
#      (resolved on CPython 3.11); rebuilt only when the pins or the
#      interpreter change, under a lock so parallel runs share one build;
#   2. `neutrino server` ($NEUTRINO_BIN, default target/debug/neutrino; build
#      it first with `cargo build -p neutrino`) on a free 127.0.0.1 port with
#      a temporary data directory; stopped and removed when the script exits,
#      whatever happens;
#   3. prepare.py (this directory), as admin through the API: an external
#      flat network `public` with subnet 203.0.113.0/24 (an API object only),
#      then tempest.conf, whose `api_extensions` is exactly what
#      GET /v2.0/extensions advertises at that moment;
#   4. `tempest run --regex RE` with debug logging (every request and
#      response is in WORK/tempest.log);
#   5. summarize.py (this directory): passed/failed/skipped over the listed
#      tests, each failure with the first line of its error and the last
#      failing request, into the report file and on standard output; the
#      subunit stream is kept as WORK/results.subunit.
#
# Exit status: 0 when no test failed, 1 when some did, 2 when the run could
# not be made (install, server start, preparation or a tempest crash).
# Needs python3 (>= 3.10) with the venv module and access to PyPI; set PYTHON
# for another interpreter. Nothing leaves 127.0.0.1.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"

VENV="$REPO_DIR/target/tempest-venv"
WORK="$REPO_DIR/target/tempest"
REPORT="$REPO_DIR/target/tempest-report.txt"
REGEX='^tempest\.api\.network'
CONCURRENCY=2
DATABASE_URL=""
TIMEOUT=3600
MODE=run
CONF_SETS=()
PY="${PYTHON:-python3}"
TEMPEST_VERSION="47.0.0"

# The whole resolved set for tempest==$TEMPEST_VERSION on CPython 3.11.
PINS="attrs==26.1.0
autopage==0.6.0
bcrypt==5.0.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
cliff==4.17.0
cmd2==4.3.1
cryptography==50.0.2
debtcollector==3.1.0
defusedxml==0.7.1
fasteners==0.20
fixtures==4.3.2
idna==3.20
invoke==3.0.3
iso8601==2.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
markdown-it-py==4.3.0
mdurl==0.1.2
msgpack==1.2.4
netaddr==1.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.serialization==5.11.0
oslo.utils==10.2.0
packaging==26.3
paramiko==5.1.0
pbr==7.1.3
prettytable==3.18.0
prompt_toolkit==3.0.53
psutil==7.2.2
pycparser==3.12
Pygments==2.21.0
PyNaCl==1.6.2
pyparsing==3.3.3
pyperclip==1.11.0
python-dateutil==4.0.0
python-subunit==1.4.6
PyYAML==6.0.3
referencing==0.37.0
requests==2.34.2
rfc3986==2.0.0
rich==15.0.0
rich-argparse==1.8.0
rpds-py==2026.9.1
stestr==4.2.1
stevedore==5.10.0
testscenarios==0.7.0
testtools==2.9.1
tomlkit==0.15.2
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
voluptuous==0.16.0
wcwidth==0.9.4
wrapt==2.5.2
tempest==${TEMPEST_VERSION}"

die() {
    echo "run-tempest.sh: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
    --venv) VENV="${2:?--venv needs a directory}"; shift 2 ;;
    --work) WORK="${2:?--work needs a directory}"; shift 2 ;;
    --report) REPORT="${2:?--report needs a file}"; shift 2 ;;
    --regex) REGEX="${2:?--regex needs a regular expression}"; shift 2 ;;
    --concurrency) CONCURRENCY="${2:?--concurrency needs a number}"; shift 2 ;;
    --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift 2 ;;
    --set) CONF_SETS+=(--set "${2:?--set needs SECTION.KEY=VALUE}"); shift 2 ;;
    --database-url) DATABASE_URL="${2:?--database-url needs a URL}"; shift 2 ;;
    --install-only) MODE=install; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ "$CONCURRENCY" =~ ^[1-9][0-9]*$ ]] || die "--concurrency must be a positive number"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number"
[[ -n "$VENV" && -n "$WORK" && -n "$REPORT" ]] || die "--venv, --work and --report must not be empty"
mkdir -p "$(dirname "$VENV")"
VENV="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"

# --- 1. the virtualenv ------------------------------------------------------

command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install Python 3 (Debian: apt-get install python3 python3-venv)"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null || die "$PY is older than Python 3.10"
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    die "$PY lacks the venv/ensurepip modules (Debian: apt-get install python3-venv)"

PY_VERSION="$("$PY" -c 'import sys; print(sys.implementation.name, *sys.version_info[:3])')"
STAMP_TEXT="$(printf '%s\n%s\n' "$PY_VERSION" "$PINS")"
STAMP="$VENV/.neutrino-tempest-stamp"

venv_is_current() {
    [[ -x "$VENV/bin/tempest" && -x "$VENV/bin/stestr" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$STAMP_TEXT" ]]
}

build_venv() {
    if [[ -e "$VENV" ]]; then
        # Only ever remove a virtualenv (or an empty directory).
        if [[ -f "$VENV/pyvenv.cfg" ]] || [[ -d "$VENV" && -z "$(ls -A "$VENV")" ]]; then
            rm -rf "$VENV"
        else
            die "$VENV exists and is not a virtualenv; refusing to replace it"
        fi
    fi
    local log constraints started
    log="$(mktemp)"
    constraints="$(mktemp)"
    printf '%s\n' "$PINS" >"$constraints"
    started=$SECONDS
    echo "run-tempest.sh: installing tempest==$TEMPEST_VERSION into $VENV" >&2
    if ! "$PY" -m venv "$VENV" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log" "$constraints"
        die "creating the virtualenv failed (Debian: apt-get install python3-venv)"
    fi
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install --quiet \
        --constraint "$constraints" "tempest==$TEMPEST_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log" "$constraints"
        rm -rf "$VENV"
        die "installing tempest==$TEMPEST_VERSION failed"
    fi
    if ! "$VENV/bin/tempest" --version >"$log" 2>&1 || ! "$VENV/bin/python" -c 'import subunit, testtools' >>"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log" "$constraints"
        rm -rf "$VENV"
        die "the installed tempest does not run"
    fi
    rm -f "$log" "$constraints"
    printf '%s\n' "$STAMP_TEXT" >"$STAMP"
    echo "run-tempest.sh: installed in $((SECONDS - started)) s" >&2
}

if ! venv_is_current; then
    # Parallel runs: one builds, the others wait and reuse it.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$VENV.lock"
        flock 9
    fi
    venv_is_current || build_venv
    if command -v flock >/dev/null 2>&1; then
        exec 9>&-
    fi
fi
[[ "$MODE" == install ]] && exit 0

# --- 2. the server ------------------------------------------------------------

NEUTRINO="${NEUTRINO_BIN:-$REPO_DIR/target/debug/neutrino}"
[[ -x "$NEUTRINO" ]] || die "$NEUTRINO is not an executable (run 'cargo build -p neutrino' or set NEUTRINO_BIN)"

# One run per workspace at a time.
mkdir -p "$(dirname "$WORK")"
if command -v flock >/dev/null 2>&1; then
    exec 8>"$WORK.lock"
    flock -n 8 || die "another run is using $WORK (use --work for a second one)"
fi
# The workspace is ours: refuse to empty a directory we did not make.
MARKER="$WORK/.neutrino-tempest-workspace"
if [[ -e "$WORK" ]]; then
    [[ -d "$WORK" ]] || die "$WORK exists and is not a directory"
    if [[ -n "$(ls -A "$WORK")" && ! -f "$MARKER" ]]; then
        die "$WORK is not empty and was not made by this script; refusing to empty it"
    fi
    find "$WORK" -mindepth 1 -delete
fi
mkdir -p "$WORK/etc"
WORK="$(cd "$WORK" && pwd)"
: >"$MARKER"
mkdir -p "$(dirname "$REPORT")"
REPORT="$(cd "$(dirname "$REPORT")" && pwd)/$(basename "$REPORT")"

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/neutrino-tempest.XXXXXX")"
SERVER_PID=""
TEMPEST_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$TEMPEST_PID" ]] && kill -0 "$TEMPEST_PID" 2>/dev/null; then
        # `timeout` leads its own process group: stop tempest and its workers.
        kill -TERM -- "-$TEMPEST_PID" 2>/dev/null || kill -TERM "$TEMPEST_PID" 2>/dev/null || true
        wait "$TEMPEST_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ADMIN_PASSWORD="$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
started=$SECONDS
# Port 0: the server picks a free port and prints it ("listening on ADDR").
DATABASE_ARGS=()
[[ -z "$DATABASE_URL" ]] || DATABASE_ARGS=(--database-url "$DATABASE_URL")
NEUTRINO_BOOTSTRAP_PASSWORD="$ADMIN_PASSWORD" NEUTRINO_LOG="${NEUTRINO_LOG:-info}" \
    "$NEUTRINO" server --listen 127.0.0.1:0 --data-dir "$DATA_DIR" "${DATABASE_ARGS[@]}" \
    >"$WORK/neutrino.out" 2>"$WORK/neutrino.log" </dev/null &
SERVER_PID=$!
ADDR=""
for _ in $(seq 300); do
    ADDR="$(sed -n 's/^listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$WORK/neutrino.out" | head -n 1)"
    [[ -n "$ADDR" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$ADDR" ]]; then
    tail -n 20 "$WORK/neutrino.log" >&2
    die "neutrino server did not start (log: $WORK/neutrino.log)"
fi
URL="http://$ADDR"

# --- 3. resources and tempest.conf --------------------------------------------

if ! "$VENV/bin/python" "$SCRIPT_DIR/prepare.py" --url "$URL" --password "$ADMIN_PASSWORD" \
    --conf "$WORK/etc/tempest.conf" --log-dir "$WORK" ${CONF_SETS[@]+"${CONF_SETS[@]}"} >"$WORK/prepare.log" 2>&1; then
    cat "$WORK/prepare.log" >&2
    die "preparing the server for tempest failed"
fi

# --- 4. tempest ---------------------------------------------------------------

cd "$WORK"
"$VENV/bin/stestr" init >/dev/null 2>&1 || die "stestr init failed in $WORK"
if ! "$VENV/bin/tempest" run --config-file "$WORK/etc/tempest.conf" --regex "$REGEX" \
    --list-tests >"$WORK/tests.list" 2>"$WORK/list.err"; then
    cat "$WORK/list.err" >&2
    die "listing the tests failed"
fi
grep -q '^tempest\.' "$WORK/tests.list" || die "no test matches the regex '$REGEX'"
RUN_ARGS=(--serial)
[[ "$CONCURRENCY" -gt 1 ]] && RUN_ARGS=(--parallel --concurrency "$CONCURRENCY")
echo "run-tempest.sh: $(grep -c '^tempest\.' "$WORK/tests.list" || true) tests, neutrino at $URL, workspace $WORK" >&2
test_started=$SECONDS
set +e
timeout --kill-after=30 "$TIMEOUT" "$VENV/bin/tempest" run --config-file "$WORK/etc/tempest.conf" \
    --regex "$REGEX" "${RUN_ARGS[@]}" >"$WORK/tempest-run.out" 2>&1 </dev/null &
TEMPEST_PID=$!
wait "$TEMPEST_PID"
TEMPEST_RC=$?
TEMPEST_PID=""
set -e
TEST_SECONDS=$((SECONDS - test_started))
[[ "$TEMPEST_RC" == 124 || "$TEMPEST_RC" == 137 ]] && echo "run-tempest.sh: tempest stopped after $TIMEOUT s" >&2

# --- 5. report ----------------------------------------------------------------

BIN_TIME="$(date -u -r "$NEUTRINO" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null || echo unknown)"
REVISION="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ "$REVISION" != unknown && -n "$(git -C "$REPO_DIR" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    REVISION="$REVISION with uncommitted changes"
fi

"$VENV/bin/stestr" last --subunit >"$WORK/results.subunit" 2>/dev/null || : >"$WORK/results.subunit"
set +e
"$VENV/bin/python" "$SCRIPT_DIR/summarize.py" --subunit "$WORK/results.subunit" \
    --tests "$WORK/tests.list" --log "$WORK/tempest.log" --report "$REPORT" \
    --conf "$WORK/etc/tempest.conf" \
    --header "tempest $TEMPEST_VERSION, regex $REGEX, concurrency $CONCURRENCY, tests ran in ${TEST_SECONDS} s (whole run $((SECONDS - started)) s)
neutrino $NEUTRINO (built $BIN_TIME; source tree $REVISION)"
SUMMARY_RC=$?
set -e
if [[ "$SUMMARY_RC" == 2 ]]; then
    tail -n 30 "$WORK/tempest-run.out" >&2
    die "no test results (tempest exited with $TEMPEST_RC; output: $WORK/tempest-run.out)"
fi
exit "$SUMMARY_RC"
