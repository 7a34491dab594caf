#!/usr/bin/env bash
# Builds (and pushes) the container image of each service binary from ./Dockerfile, one --target
# per binary (a service crate has one, the workflow's two: workflow and supervisor), tagged
# REGISTRY/fabrikam-TARGET:VERSION-REVISION: the crate's version and the first
# 12 hex digits of the git commit (plus -dirty for an uncommitted tree, which is never pushed).
# Never `latest`. The OCI labels get the version, the full revision, the commit time and the
# source repository.
#
#   scripts/build-images.sh                              every service, loaded into the local Docker
#   scripts/build-images.sh delivery workflow            some services (workflow: also supervisor)
#   scripts/build-images.sh --registry myacr.azurecr.io --push
#   scripts/build-images.sh --release-tag release/delivery/v0.1.0 --registry R --push
#         the release pipeline: builds the service the tag names, checks that the tag's
#         version is the crate's version, and also tags the image with that version
#   scripts/build-images.sh --dry-run ...                print the docker commands only
#   scripts/build-images.sh --print-tag                  print the tag (VERSION-REVISION) only
#
# Needs Docker with BuildKit (docker buildx) except with --dry-run. In GitHub Actions it writes
# tag=VERSION-REVISION and services=... (the crates) to $GITHUB_OUTPUT for the deploy job.
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${FABRIKAM_REGISTRY:-fabrikam.azurecr.io}
push=false
dry_run=false
print_tag=false
release_tag=
selected=()
while [ $# -gt 0 ]; do
  case $1 in
    --registry) registry=$2; shift 2 ;;
    --push) push=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    --print-tag) print_tag=true; shift ;;
    --release-tag) release_tag=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "build-images: unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1"); shift ;;
  esac
done

mapfile -t all_services < <(ls services)
metadata=$(cargo metadata --no-deps --format-version 1 --locked --offline 2>/dev/null || cargo metadata --no-deps --format-version 1 --locked)
crate_field() { # crate_field PACKAGE FIELD
  python3 -c 'import json, sys
meta = json.load(sys.stdin)
pkg = next(p for p in meta["packages"] if p["name"] == sys.argv[1])
print(pkg.get(sys.argv[2]) or "")' "$1" "$2" <<<"$metadata"
}

extra_tag=
if [ -n "$release_tag" ]; then
  # release/<service>/<semver>, semver with or without a leading v (release/delivery/v1.0.2).
  if ! [[ $release_tag =~ ^release/([a-z]+)/v?([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)$ ]]; then
    echo "build-images: $release_tag is not release/<service>/<semver>" >&2
    exit 2
  fi
  service=${BASH_REMATCH[1]}
  semver=${BASH_REMATCH[2]}
  [ -f "services/$service/Cargo.toml" ] || { echo "build-images: no service $service" >&2; exit 2; }
  crate_version=$(crate_field "$service" version)
  if [ "$semver" != "$crate_version" ]; then
    echo "build-images: tag $release_tag says $semver, but $service's crate version is $crate_version" >&2
    exit 1
  fi
  selected=("$service")
  extra_tag=$semver
fi
[ ${#selected[@]} -gt 0 ] || selected=("${all_services[@]}")
for service in "${selected[@]}"; do
  [ -f "services/$service/Cargo.toml" ] || { echo "build-images: no service $service (one of: ${all_services[*]})" >&2; exit 2; }
done

revision=$(git rev-parse HEAD)
short=${revision:0:12}
created=$(git show -s --format=%cI HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  short="$short-dirty"
  if $push; then
    echo "build-images: the work tree has uncommitted changes; commit before pushing images" >&2
    exit 1
  fi
fi
# The source repository label: given, else GitHub's, else the workspace's `repository`.
source_url=${FABRIKAM_IMAGE_SOURCE:-}
if [ -z "$source_url" ] && [ -n "${GITHUB_REPOSITORY:-}" ]; then
  source_url="${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY"
fi
if [ -z "$source_url" ]; then
  source_url=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["repository"])')
fi

if $print_tag; then
  echo "$(crate_field "${selected[0]}" version)-$short"
  exit 0
fi

# The crate's [[bin]] names, from its Cargo.toml.
binaries_of() {
  awk '/^\[\[bin\]\]/ { in_bin = 1; next } /^\[/ { in_bin = 0 }
    in_bin && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print }' "services/$1/Cargo.toml"
}

output=--load
$push && output=--push
for service in "${selected[@]}"; do
  version=$(crate_field "$service" version)
  tag="$version-$short"
  for binary in $(binaries_of "$service"); do
    image="$registry/$binary"
    command=(docker buildx build . --target "${binary#fabrikam-}"
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
      --build-arg "CREATED=$created" --build-arg "SOURCE=$source_url"
      --tag "$image:$tag")
    [ -z "$extra_tag" ] || command+=(--tag "$image:$extra_tag")
    command+=("$output")
    echo "${command[*]}"
    $dry_run || "${command[@]}"
  done
done
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "tag=$tag" >>"$GITHUB_OUTPUT"
  echo "services=${selected[*]}" >>"$GITHUB_OUTPUT"
fi
