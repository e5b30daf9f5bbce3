#!/usr/bin/env bash
# The s3a jars for PySpark's Hadoop (hadoop-aws and the AWS SDK v2 modules it needs), resolved by
# Maven from the Maven repository as images/spark-jars/pom.xml lists them, checked, and cached.
#
#   images/spark-jars.sh              print the cache folder holding the jars (fetching them if needed)
#   images/spark-jars.sh --into DIR   also copy them into DIR (the build context: images/spark-jars/jars)
#   images/spark-jars.sh --update-sums   resolve again and rewrite images/spark-jars/SHA256SUMS
#
# Checks: Maven runs with strict checksums (-C: each file's SHA-1 from the repository must match),
# and every jar must match its SHA-256 in images/spark-jars/SHA256SUMS, with no jar missing or
# extra. The cache ($GPUBATCH_CACHE/spark-jars/KEY) is keyed by the pom and SHA256SUMS, outside
# the repo; the Dockerfiles COPY the jars from the build context, so image builds need no network.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/images/spark-jars
cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
sums=$src/SHA256SUMS

resolve() { # resolve DIR: the jars the pom lists, into DIR
  command -v mvn >/dev/null || { echo "spark-jars: mvn is missing (apt-get install maven)" >&2; exit 1; }
  mvn -B -q -C -f "$src/pom.xml" dependency:copy-dependencies -DoutputDirectory="$1" \
    -DincludeScope=runtime >&2 || { echo "spark-jars: Maven could not resolve $src/pom.xml" >&2; exit 1; }
}

if [[ ${1:-} == --update-sums ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  resolve "$work"
  (cd "$work" && sha256sum -- *.jar | LC_ALL=C sort -k2) >"$sums"
  echo "spark-jars: wrote $sums ($(wc -l <"$sums") jars)" >&2
  exit 0
fi

key=$(cat "$src/pom.xml" "$sums" | sha256sum | cut -c1-16)
dir=$cache_root/spark-jars/$key
mkdir -p "$cache_root/spark-jars"
exec 9>"$cache_root/spark-jars/.lock"
flock 9
if [[ ! -f $dir/.complete ]]; then
  work=$(mktemp -d "$cache_root/spark-jars/.new-XXXXXX")
  resolve "$work"
  # exactly the listed jars, each with its listed SHA-256
  want=$(awk '{print $2}' "$sums" | LC_ALL=C sort)
  have=$(cd "$work" && ls -- *.jar | LC_ALL=C sort)
  if [[ $want != "$have" ]]; then
    echo "spark-jars: Maven resolved other jars than SHA256SUMS lists:" >&2
    diff <(echo "$want") <(echo "$have") >&2 || true
    rm -rf "$work"
    exit 1
  fi
  if ! (cd "$work" && sha256sum --quiet -c "$sums" >&2); then
    echo "spark-jars: a jar does not match its SHA-256 in $sums" >&2
    rm -rf "$work"
    exit 1
  fi
  rm -rf "$dir"
  touch "$work/.complete"
  mv "$work" "$dir"
fi
(cd "$dir" && sha256sum --quiet -c "$sums" >&2) || { echo "spark-jars: the cache $dir is damaged; remove it" >&2; exit 1; }

if [[ ${1:-} == --into ]]; then
  into=${2:?--into needs a folder}
  rm -rf "$into"
  mkdir -p "$into"
  cp -- "$dir"/*.jar "$into"/
fi
echo "$dir"
