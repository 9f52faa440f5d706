#!/usr/bin/env bash
# Fetch the Apache Kafka broker the test suite runs (tests/harness/kafka.py): the broker jar and its
# runtime dependencies, as pinned in tests/harness/kafka/pom.xml, copied by Maven into
#   ${EVGATE_KAFKA_CACHE:-<project root>/.cache/kafka}/kafka-libs
# Idempotent: the folder carries a stamp with the pom's SHA-256, and a matching stamp makes this a
# no-op. Maven resolves through the machine's own configuration (~/.m2/settings.xml, the Maven
# installation's settings); extra arguments go to mvn (e.g. -Dmaven.repo.local=/some/repo).
# Prints the jar folder on stdout.
#
# Usage: bash tests/harness/kafka/fetch.sh [mvn args...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
pom="$here/pom.xml"
cache="${EVGATE_KAFKA_CACHE:-$root/.cache/kafka}"
libs="$cache/kafka-libs"
mvn_cmd="${MVN:-mvn}"

want="$(sha256sum "$pom" | cut -d' ' -f1)"

fetched() {
    [[ -f "$libs/.stamp" && "$(cat "$libs/.stamp")" == "$want" ]]
}

if fetched; then
    echo "$libs"
    exit 0
fi

if ! command -v "$mvn_cmd" >/dev/null 2>&1; then
    echo "fetch.sh: '$mvn_cmd' not found; Maven is needed to fetch the Kafka broker for the tests" >&2
    exit 1
fi

mkdir -p "$cache"
# Two concurrent fetches (parallel make targets) take turns; the second finds the stamp.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.fetch.lock"
    flock 9
    if fetched; then
        echo "$libs"
        exit 0
    fi
fi

tmp="$(mktemp -d "$cache/kafka-libs.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "fetch.sh: fetching the Kafka broker jars ($pom) ..." >&2
started=$SECONDS
# -q: only errors. Maven's output all goes to stderr (stdout is the jar folder), minus the stray
# colour-reset codes some Maven builds print even in batch mode.
"$mvn_cmd" -B -q -f "$pom" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" "$@" 2>&1 |
    sed -e $'s/\x1b\\[[0-9;]*m//g' >&2

if ! compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null; then
    echo "fetch.sh: Maven succeeded but no kafka_2.13 jar landed in $tmp" >&2
    exit 1
fi

echo "$want" >"$tmp/.stamp"
chmod 755 "$tmp"
rm -rf "$libs"
mv "$tmp" "$libs"
trap - EXIT
echo "fetch.sh: $(find "$libs" -name '*.jar' | wc -l) jars in $((SECONDS - started)) s" >&2
echo "$libs"
