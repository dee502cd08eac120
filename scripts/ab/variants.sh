#!/bin/bash
# Builds the agent at HEAD ("base") and once per kernel-program variant of
# scripts/ab/variants/*.patch (one-off edits that take one piece of work out), for ab.sh:
#
#   scripts/ab/variants.sh OUT [VARIANT...]     # OUT/base/microseg, OUT/VARIANT/microseg
#   sudo MODE=cost BINS="OUT/base/microseg OUT/no-events/microseg" scripts/ab/ab.sh
#
# Builds in a temporary worktree of HEAD (uncommitted changes are not included) with the
# target directory of its own (target/variants), so the repository's own build is left alone.
set -eu
OUT=$(realpath -m "$1"); shift
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WT=$(mktemp -d)
trap 'git -C "$REPO" worktree remove --force "$WT"' EXIT
git -C "$REPO" worktree add -q --detach "$WT" HEAD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/variants}
build() {
  (cd "$WT" && cargo build --release -q -p microseg)
  mkdir -p "$OUT/$1" && cp "$CARGO_TARGET_DIR/release/microseg" "$OUT/$1/"
}
build base
for v in ${@:-$(cd "$REPO/scripts/ab/variants" && ls *.patch | sed 's/\.patch$//')}; do
  git -C "$WT" apply "$REPO/scripts/ab/variants/$v.patch"
  build "$v"
  git -C "$WT" checkout -q .
done
