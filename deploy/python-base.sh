#!/usr/bin/env bash
# deploy/python-base.sh — a Python base image made from this machine's own
# Python, for machines that cannot pull python:3.x from a registry: the
# interpreter, its standard library, the given packages and every shared
# library they load, FROM nothing (docker import).
#
#   deploy/python-base.sh [IMAGE [PACKAGE...]]
#
# Defaults: IMAGE pnpworker/python-base:local; PACKAGE sklearn and what it
# imports (numpy, scipy, joblib, threadpoolctl), from Debian's
# /usr/bin/python3 (apt-get install python3-sklearn). Where a registry is
# reachable, any image with python3 and the worker's packages does
# instead, e.g. one built FROM python:3.12-slim with pip install
# scikit-learn (docs/DEPLOY.md).
#
# Environment: PYTHON (default /usr/bin/python3), DOCKER (default docker).
set -euo pipefail
cd "$(dirname "$0")/.."

image="${1:-pnpworker/python-base:local}"
shift || true
packages=("$@")
[ "${#packages[@]}" -gt 0 ] || packages=(sklearn numpy scipy joblib threadpoolctl)
PYTHON="${PYTHON:-/usr/bin/python3}"
DOCKER="${DOCKER:-docker}"

"$PYTHON" -c "import $(IFS=,; echo "${packages[*]}")" ||
	{ echo "python-base: $PYTHON cannot import ${packages[*]}" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

# The files: the interpreter (its real path and the python3 name), the
# standard library without its tests, and each package's directory or
# module file with its metadata.
mapfile -t files < <("$PYTHON" - "${packages[@]}" <<'PY'
import glob, importlib.util, os, sys, sysconfig
out = {os.path.realpath(sys.executable), sys.executable}
std = sysconfig.get_paths()["stdlib"]
for dirpath, dirnames, filenames in os.walk(std):
    dirnames[:] = [d for d in dirnames if d not in ("test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3")]
    if "site-packages" in dirpath or "dist-packages" in dirpath:
        continue
    for f in filenames:
        out.add(os.path.join(dirpath, f))
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    locs = list(spec.submodule_search_locations or [])
    for loc in locs:
        for dirpath, _, filenames in os.walk(loc):
            for f in filenames:
                out.add(os.path.join(dirpath, f))
        parent = os.path.dirname(loc)
        for meta in glob.glob(os.path.join(parent, name + "*-info")) + glob.glob(os.path.join(parent, name + ".libs")):
            for dirpath, _, filenames in os.walk(meta):
                for f in filenames:
                    out.add(os.path.join(dirpath, f))
    if not locs and spec.origin:
        out.add(spec.origin)
for p in sorted(out):
    print(p)
PY
)

# Every shared library the interpreter and the packages' extensions load.
mapfile -t libs < <(for f in "$(readlink -f "$PYTHON")" "${files[@]}"; do
	case "$f" in *.so | *.so.* | */bin/python3*) ldd "$f" 2>/dev/null || true ;; esac
done | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p' | sort -u)

# ld.so.cache: the loader finds Debian's multiarch directories through it.
printf '%s\n' "${files[@]}" "${libs[@]}" /etc/ld.so.cache | sed 's|^/||' | sort -u >"$root/list"
mkdir -p "$root/fs/tmp" "$root/fs/etc"
chmod 1777 "$root/fs/tmp"
tar -C / -h -cf - -T "$root/list" | tar -C "$root/fs" -xf -
echo "nobody:x:65532:65532:nobody:/tmp:/sbin/nologin" >"$root/fs/etc/passwd"
size="$(du -sh "$root/fs" | cut -f1)"
arch="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu")')"
tar -C "$root/fs" -cf - . | "$DOCKER" import \
	-c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'ENV LANG=C.UTF-8' \
	-c "ENV LD_LIBRARY_PATH=/lib/$arch:/usr/lib/$arch" - "$image" >/dev/null
echo "built $image from $("$PYTHON" --version) with ${packages[*]} ($size)"
