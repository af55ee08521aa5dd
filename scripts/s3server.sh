#!/usr/bin/env bash
# Installs versitygw, the S3 server internal/objstore's tests run against,
# when it is missing or not the pinned version. versitygw (Apache-2.0) is an
# S3 gateway over a directory; it was chosen because it builds here in about
# a minute (MinIO's server takes three). `go install pkg@version` builds it
# in its own module, so our go.mod never sees it.
# Installs into $(go env GOBIN), or $(go env GOPATH)/bin, where the tests
# look after PATH.
set -euo pipefail
MOD=github.com/versity/versitygw
VERSION=v1.8.0
GO=${GO:-go}
bindir=$($GO env GOBIN)
[ -n "$bindir" ] || bindir="$($GO env GOPATH | cut -d: -f1)/bin"
bin="$bindir/versitygw"
if [ -x "$bin" ] && $GO version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+$MOD[[:space:]]+$VERSION([[:space:]]|$)"; then
  exit 0
fi
echo "building versitygw $VERSION into $bindir (about a minute on 2 cores)" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
GOBIN="$bindir" GOFLAGS= GOWORK=off $GO install "$MOD/cmd/versitygw@$VERSION"
