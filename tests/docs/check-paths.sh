#!/usr/bin/env bash
# check-paths.sh SOURCE_DIR - every file a document names exists (ctest docs.paths).
# Reads README.md, docs/*.md, bench/README.md and configs/*.md: relative Markdown links, and
# `code spans` that name a path in the repository (they start with one of its top-level
# directories) or a path outside it (/work/..., ../shared/...), which a user's clone does not have.
# Placeholders (<...>, *, {...}, N) and build outputs (build*/) are not paths to check.
# Prints one line per broken reference, "FILE:LINE: PATH"; exit 0 iff there is none.
set -uo pipefail
src=$(cd "$1" && pwd)
cd "$src" || exit 2
tops=$(ls -d */ .ci/ 2>/dev/null | tr -d / | grep -vE '^build' | paste -sd'|')
broken=0
for doc in README.md docs/*.md bench/README.md configs/*.md; do
    [ -f "$doc" ] || continue
    dir=$(dirname "$doc")
    # Markdown links: [text](target), relative targets only, without #anchors.
    grep -noE '\]\([^)#][^)]*\)' "$doc" | while IFS=: read -r line match; do
        target=${match#](}; target=${target%)}; target=${target%%#*}
        case $target in http://*|https://*|mailto:*|"") continue ;; esac
        [ -e "$dir/$target" ] || echo "$doc:$line: $target"
    done
    # Code spans naming a path: in the repository (a top-level directory first) or outside it.
    grep -noE '`[^` ]+`' "$doc" | while IFS=: read -r line match; do
        p=${match//\`/}
        case $p in *'<'*|*'*'*|*'{'*|*'$'*|*'...'*) continue ;; esac
        if [[ $p =~ ^(/work/|\.\./shared/|shared/|/root/) ]]; then
            echo "$doc:$line: $p (outside the repository)"; continue
        fi
        [[ $p =~ ^($tops)/ ]] || continue
        p=${p%%:*}; p=${p%,}; p=${p%.}
        [ -e "$p" ] || echo "$doc:$line: $p"
    done
done > /tmp/check-paths.$$ 2>&1
if [ -s /tmp/check-paths.$$ ]; then
    echo "check-paths: documents name files that do not exist:"; cat /tmp/check-paths.$$; broken=1
else
    echo "check-paths: every path the documents name exists"
fi
rm -f /tmp/check-paths.$$
exit $broken
