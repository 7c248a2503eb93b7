#!/usr/bin/env bash
# Installs the npm packages that flags/ofrep_npm_test.go drives (the published OpenFeature
# JavaScript SDKs and OFREP providers, pinned in hack/ofrep-js/package-lock.json) into
# hack/ofrep-js/node_modules with `npm ci`, once: reused while package-lock.json is unchanged.
# Needs node >= 20 and npm; installs Debian's when they are missing (root, as in CI).
set -euo pipefail
dir="$(cd "$(dirname "$0")/ofrep-js" && pwd)"
stamp="$dir/node_modules/.ctxprop-package-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "ofrep-js.sh: npm packages present"
  exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "ofrep-js.sh: installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "ofrep-js.sh: node $(node --version) is too old: the OpenFeature providers and eventsource 4 need node 20 or later; install it (https://nodejs.org) and run make tools again" >&2
  exit 1
fi
echo "ofrep-js.sh: npm ci in $dir"
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund)
echo "$want" >"$stamp"
