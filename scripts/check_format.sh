#!/usr/bin/env bash
# check_format.sh - fail when any C source is not formatted as .clang-format says.
#
# Runs `clang-format --dry-run -Werror` on every tracked .c, .h and .cc file (git ls-files); outside
# a git checkout, on every such file found under the source tree (build directories excluded).
# Usage: scripts/check_format.sh [SOURCE_ROOT]   (default: the directory above this script)
# Environment: CLANG_FORMAT (default clang-format). Exits 77 (skipped) when it is not installed.
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
cf=${CLANG_FORMAT:-clang-format}
if ! command -v "$cf" >/dev/null 2>&1; then
    echo "check_format: $cf not found (Debian package clang-format): skipped" >&2
    exit 77
fi

files=()
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    while IFS= read -r -d '' f; do
        [ -f "$f" ] && files+=("$f")
    done < <(git ls-files -z -- '*.c' '*.h' '*.cc')
else
    while IFS= read -r -d '' f; do
        files+=("${f#./}")
    done < <(find . \( -path './build*' -o -path './.git' \) -prune -o \
                  -type f \( -name '*.c' -o -name '*.h' -o -name '*.cc' \) -print0 | sort -z)
fi
if [ ${#files[@]} -eq 0 ]; then
    echo "check_format: no C sources found under $root" >&2
    exit 2
fi

if "$cf" --dry-run -Werror "${files[@]}"; then
    echo "check_format: ${#files[@]} files formatted as .clang-format says"
else
    echo "check_format: files above differ from clang-format's output (make format fixes them)" >&2
    exit 1
fi
