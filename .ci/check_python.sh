#!/bin/sh
# The Makefile's interpreter guard (POSIX sh, so it can judge any Python, even
# one too old to run a modern script).
#
#   sh .ci/check_python.sh PYTHON
#       Exit 0 if PYTHON is a supported CPython.  Otherwise print ONE line (the
#       version found, the supported range, how to pick another interpreter)
#       and exit 1.
#
#   sh .ci/check_python.sh --venv VENV [--explicit] PYTHON
#       Make sure VENV is a virtual environment of a supported interpreter and
#       record that interpreter in VENV/.python ("CPython 3.11.2 /usr/bin/python3.11").
#       A venv is never silently reused when it does not fit; it is recreated
#       with PYTHON (recreating is friendlier than failing: `make` then simply
#       installs the lock again) when
#         - there is none yet, or its python no longer runs;
#         - its python is not a supported version;
#         - its interpreter changed minor version under it (VENV/.python differs);
#         - --explicit (PYTHON= given to make) and PYTHON is another interpreter
#           or version than the one that made VENV.
#       A plain `make test` (no PYTHON=) keeps a working, supported venv made by
#       any interpreter, e.g. after `make setup PYTHON=/usr/bin/python3.12`.
#       VENV/.python is rewritten only when its content changes (the Makefile
#       reinstalls the lock when it does).
#
# The supported range is pyproject.toml's `requires-python` (one source of
# truth); tests/test_python_versions.py checks environment.yml agrees and that
# this script accepts exactly the versions that specifier accepts.
set -u

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
REQUIRES=$(sed -n 's/^requires-python[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)
if [ -z "$REQUIRES" ]; then
    echo "error: no requires-python in $ROOT/pyproject.toml" >&2
    exit 2
fi
HINT="point PYTHON= at another interpreter, e.g. make setup PYTHON=/usr/bin/python3.12"

# "IMPL X.Y.Z REALPATH" of an interpreter, or nothing if it does not run.
# (Python 2 compatible on purpose: the point is to judge old interpreters.)
query() {
    "$1" -c 'import os, platform, sys; v = sys.version_info; sys.stdout.write("%s %d.%d.%d %s\n" % (platform.python_implementation(), v[0], v[1], v[2], os.path.realpath(sys.executable)))' 2>/dev/null
}

# X.Y[.Z] -> comparable integer
num() {
    IFS=. read -r a b c <<EOF
$1
EOF
    echo $(( ${a:-0} * 1000000 + ${b:-0} * 1000 + ${c:-0} ))
}

# head_of 3.14.2 3.14 -> 3.14 (VERSION cut to as many parts as PREFIX has)
head_of() {
    echo "$1" | cut -d. -f1-$(( $(echo "$2" | tr -cd . | wc -c) + 1 ))
}

# supported IMPL VERSION: exit 0 if VERSION satisfies $REQUIRES (clauses
# >=, >, <=, <, ==, != with X.Y[.Z], and ==/!= X.Y.*) and IMPL is CPython.
supported() {
    [ "$1" = CPython ] || return 1
    v=$(num "$2")
    rest=$REQUIRES
    while [ -n "$rest" ]; do
        clause=${rest%%,*}
        case $rest in *,*) rest=${rest#*,} ;; *) rest= ;; esac
        clause=$(echo "$clause" | tr -d ' ')
        case $clause in
            '>='*) [ "$v" -ge "$(num "${clause#>=}")" ] || return 1 ;;
            '<='*) [ "$v" -le "$(num "${clause#<=}")" ] || return 1 ;;
            '=='*'.*') prefix=${clause#==}; prefix=${prefix%.\*}; [ "$(head_of "$2" "$prefix")" = "$prefix" ] || return 1 ;;
            '!='*'.*') prefix=${clause#!=}; prefix=${prefix%.\*}; [ "$(head_of "$2" "$prefix")" != "$prefix" ] || return 1 ;;
            '=='*) [ "$v" -eq "$(num "${clause#==}")" ] || return 1 ;;
            '!='*) [ "$v" -ne "$(num "${clause#!=}")" ] || return 1 ;;
            '>'*) [ "$v" -gt "$(num "${clause#>}")" ] || return 1 ;;
            '<'*) [ "$v" -lt "$(num "${clause#<}")" ] || return 1 ;;
            '') ;;
            *) echo "error: cannot read requires-python clause '$clause'" >&2; exit 2 ;;
        esac
    done
    return 0
}

# check PYTHON: exit 1 with one line unless it runs and is supported.
check() {
    found=$(query "$1")
    if [ -z "$found" ]; then
        echo "error: PYTHON=$1 does not run (not found?); this book needs CPython $REQUIRES; $HINT" >&2
        exit 1
    fi
    set -- "$1" $found
    if ! supported "$2" "$3"; then
        echo "error: PYTHON=$1 is $2 $3 ($4), not supported: this book needs CPython $REQUIRES; $HINT" >&2
        exit 1
    fi
}

if [ "${1:-}" != --venv ]; then
    [ $# -eq 1 ] || { echo "usage: $0 PYTHON | $0 --venv VENV [--explicit] PYTHON" >&2; exit 2; }
    check "$1"
    exit 0
fi

VENV=$2
shift 2
EXPLICIT=0
if [ "${1:-}" = --explicit ]; then EXPLICIT=1; shift; fi
PYTHON=${1:-python3}
STAMP=$VENV/.python

recreate=
if [ -e "$VENV" ]; then
    have=$(query "$VENV/bin/python")
    recorded=$(cat "$STAMP" 2>/dev/null || true)
    if [ -z "$have" ]; then
        recreate="its python does not run"
    else
        set -- $have
        if ! supported "$1" "$2"; then
            recreate="it runs $1 $2, not supported"
        elif [ -n "$recorded" ] && [ "$(echo "$recorded" | cut -d' ' -f2 | cut -d. -f1,2)" != "$(echo "$2" | cut -d. -f1,2)" ]; then
            recreate="it was made by $(echo "$recorded" | cut -d' ' -f1-2) but now runs $1 $2"
        elif [ "$EXPLICIT" = 1 ]; then
            want=$(query "$PYTHON")
            made_by=${recorded:-$have}        # no record yet: a symlinked venv's realpath is its base
            if [ -z "$want" ]; then
                check "$PYTHON"                # prints the one-line error
            fi
            # same interpreter = same implementation, version and real path
            if [ "$(echo "$want" | cut -d' ' -f1-2) $(echo "$want" | cut -d' ' -f3-)" != "$(echo "$have" | cut -d' ' -f1-2) $(echo "$made_by" | cut -d' ' -f3-)" ]; then
                recreate="it was made by $(echo "$made_by" | cut -d' ' -f1-2) ($(echo "$made_by" | cut -d' ' -f3-)) and PYTHON=$PYTHON is $(echo "$want" | cut -d' ' -f1-2)"
            fi
        fi
    fi
    if [ -z "$recreate" ]; then
        # keep it; record (or refresh) what runs it
        new="$1 $2 $(echo "${recorded:-$have}" | cut -d' ' -f3-)"
        [ "$new" = "$recorded" ] || echo "$new" > "$STAMP"
        exit 0
    fi
    if [ ! -f "$VENV/pyvenv.cfg" ]; then
        echo "error: VENV=$VENV exists but is not a virtual environment ($recreate); remove it or choose another VENV=" >&2
        exit 1
    fi
fi

check "$PYTHON"
want=$(query "$PYTHON")
if [ -n "$recreate" ]; then
    echo "make: recreating $VENV: $recreate" >&2
    rm -rf "$VENV"
fi
if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "error: '$PYTHON -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
fi
echo "$want" > "$STAMP"
