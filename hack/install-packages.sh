#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the end-to-end suite run: etcd (the control
# plane's store), iproute2 (network namespaces), nginx (the ingress in front of the interceptor),
# prometheus (scrapes lobby's metrics), and for the real node (e2e/node) containerd, runc, the CNI
# plugins and iptables, wrk (the load generator of `make bench`), and chromium (the headless browser
# of e2e/browser). Packages already present are left alone. Services the packages would start are
# kept from starting: the tests run their own instances.
set -euo pipefail

declare -A want=([etcd]=etcd-server [ip]=iproute2 [nginx]=nginx [prometheus]=prometheus
	[containerd]=containerd [runc]=runc [iptables]=iptables [nsenter]=util-linux
	[/usr/lib/cni/bridge]=containernetworking-plugins [wrk]=wrk [chromium]=chromium)
missing=()
for cmd in "${!want[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || [[ -x /usr/bin/$cmd ]] || [[ -x $cmd ]] ||
		missing+=("${want[$cmd]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
	echo "install-packages: need root to apt-get install ${missing[*]}" >&2
	exit 1
fi
# policy-rc.d answering 101 tells the packages' maintainer scripts not to start their services.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	own_policy=true
fi
trap '$own_policy && rm -f "$policy"' EXIT
echo "installing ${missing[*]} (Debian packages)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
