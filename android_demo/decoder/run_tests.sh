#!/usr/bin/env bash
# Build the Kotlin decoder (plain JVM, no Android) and its test runner with kotlinc, then run the tests.
#
#   android_demo/decoder/run_tests.sh [--out DIR] [CASES_DIR...]
#   android_demo/decoder/run_tests.sh --bench N [CASES_DIR...]   (median decode times, no tests)
#
# CASES_DIR: folders written by android_demo/tools/export_golden.py (default: the committed resources in
# src/test/resources/golden). With --out, the Kotlin results are written as DIR/<case>.npz.
# Needs: kotlinc + kotlin (Debian: apt-get install kotlin) and org.json (Debian: libandroid-json-java, the
# Android implementation of org.json; on Android it is part of the platform). Prints "N passed, M failed".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/build"
json_jar="${ORG_JSON_JAR:-/usr/share/java/com.android.json.jar}"

if ! command -v kotlinc >/dev/null 2>&1; then
  echo "error: kotlinc not found; install it with: apt-get install -y kotlin" >&2
  exit 3
fi
if [ ! -f "$json_jar" ]; then
  echo "error: org.json jar not found at $json_jar; install it with: apt-get install -y libandroid-json-java (or set ORG_JSON_JAR)" >&2
  exit 3
fi

args=("$@")
has_cases=0
skip=0
for a in "${args[@]+"${args[@]}"}"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  if [ "$a" = "--out" ] || [ "$a" = "--bench" ]; then skip=1; continue; fi
  has_cases=1
done
if [ "$has_cases" = 0 ]; then
  args+=("$here/src/test/resources/golden")
fi

mkdir -p "$build"
jar="$build/decoder-tests.jar"
sources=$(find "$here/src/main/kotlin" "$here/src/test/kotlin" -name '*.kt' | sort)
newest_src=$(ls -t $sources "$0" | head -1)
if [ ! -f "$jar" ] || [ "$newest_src" -nt "$jar" ]; then
  echo "compiling $(echo "$sources" | wc -l) Kotlin files with $(kotlinc -version 2>&1 | grep -o 'kotlinc-jvm [^ ]*')"
  # C1-only JIT and serial GC: kotlinc is a short-lived JVM, this roughly halves the build time
  kotlinc -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -nowarn -cp "$json_jar" -d "$build/partial.jar" $sources 2>&1 | grep -v -e 'warning: Options -Xverify' || true
  [ -f "$build/partial.jar" ] || { echo "error: compilation failed" >&2; exit 1; }
  mv "$build/partial.jar" "$jar"
fi
exec kotlin -J-Xss8m -cp "$jar:$json_jar" com.maskconver.decoder.DecoderTestsKt "${args[@]}"
