#!/usr/bin/env bash
# Installs the Debian packages the tests need, once: chromium (the web page test),
# iproute2, iptables and setpriv (network-namespace partition and interception tests),
# nats-server (the relay's end-to-end test runs Debian's as a separate process).
# Needs root, as in CI.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -eq 0 ]; then
  echo "apt.sh: test packages present"
  exit 0
fi
echo "apt.sh: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
