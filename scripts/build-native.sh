#!/usr/bin/env bash
# Build the C hot paths (src/cashmarkets/core/_native.c) next to the Python sources.
# Rebuilt whenever the source's sha256 differs from the one compiled into the extension, so a
# stale build is never used. `--required` (make test) fails loudly without a C compiler;
# otherwise (make run) a failed build warns and the pure-Python paths run.
set -euo pipefail
BIN=${VENV:-.venv}/bin
SRC=src/cashmarkets/core/_native.c
CC=${CC:-cc}
required=${1:-}
suffix=$("$BIN/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
include=$("$BIN/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
out=src/cashmarkets/core/_native$suffix
sha=$(sha256sum "$SRC" | cut -c1-64)
if [ -f "$out" ] && grep -qa "$sha" "$out"; then
  exit 0
fi
rm -f "$out"
if $CC -O2 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -shared -fPIC \
    -I"$include" -DNATIVE_SOURCE_SHA256="\"$sha\"" -o "$out.tmp" "$SRC"; then
  mv "$out.tmp" "$out"
  echo "built $out"
else
  rm -f "$out.tmp"
  if [ "$required" = "--required" ]; then
    echo "error: could not build $SRC (a C compiler and the Python headers are needed for make test)" >&2
    exit 1
  fi
  echo "warning: could not build $SRC; running the pure-Python paths (slower, same results)" >&2
fi
