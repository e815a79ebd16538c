#!/usr/bin/env bash
# Builds the pinned control-plane binaries the tests need (kube-apiserver,
# kube-controller-manager, kubelet, etcd) from the Go modules in this directory,
# into a cache outside the repository keyed by version and go.sum, so a second
# run reuses them. Prints the cache directory on stdout.
#
# usage: build.sh [component ...]   (default: etcd kube-apiserver kube-controller-manager)
# components: etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl
#             agnhost (Kubernetes' e2e test image program, all subcommands)
#             netpol.test (Kubernetes' NetworkPolicy e2e specs)
#             conformance.test (Kubernetes' sig-network e2e specs)
#             coredns (CoreDNS with the plugins a cluster DNS uses)
#             anp.test (the network-policy-api AdminNetworkPolicy conformance suite)
#             flanneld, flannel-install-conf (flannel v0.28.10's daemon and its image's conflist installer)
#             kube-flannel.yml (the same module's DaemonSet manifest, as users apply it)
#             containerd2 (containerd 2.x: a directory of containerd, ctr and
#                          containerd-shim-runc-v2 from the module in containerd/)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
k8s_version=v1.37.2
etcd_version=v3.6.16
cache_root=${KDD_CNI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kdd-cni}

# The key is the content of go.mod and go.sum only (not their paths), so
# every clone of the same commit shares the cache.
key() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-12; }
k8s_dir=$cache_root/kubernetes-$k8s_version-$(key "$here")
etcd_dir=$cache_root/etcd-$etcd_version-$(key "$here/etcd")
coredns_dir=$cache_root/coredns-$(cat "$here/coredns/go.mod" "$here/coredns/go.sum" "$here/coredns/main.go" | sha256sum | cut -c1-12)
flannel_dir=$cache_root/flannel-$(key "$here/flannel")
containerd_version=$(sed -n 's/^require github.com\/containerd\/containerd\/v2 //p' "$here/containerd/go.mod")
containerd_dir=$cache_root/containerd-$containerd_version-$(key "$here/containerd")
anp_dir=$cache_root/anp-$(cat "$here/anp/go.mod" "$here/anp/go.sum" "$here/anp/anp_test.go" | sha256sum | cut -c1-12)
bin_dir=$cache_root/bin-$k8s_version-$etcd_version

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kube-apiserver kube-controller-manager)

build() { # dir module-dir package output
	local dir=$1 mod=$2 pkg=$3 out=$4 ldflags=${5:-}
	[ -x "$dir/$out" ] && return 0
	mkdir -p "$dir"
	echo "building $out (cold builds take minutes; cached afterwards in $dir)" >&2
	local start=$SECONDS
	(cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/.$out.tmp" "$pkg")
	mv "$dir/.$out.tmp" "$dir/$out"
	echo "built $out in $((SECONDS - start))s" >&2
}

mkdir -p "$bin_dir"
for c in "${components[@]}"; do
	case $c in
	etcd) build "$etcd_dir" "$here/etcd" go.etcd.io/etcd/server/v3 etcd
		ln -sfn "$etcd_dir/etcd" "$bin_dir/etcd" ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kube-proxy | kubelet | kubectl)
		build "$k8s_dir" "$here" "k8s.io/kubernetes/cmd/$c" "$c" \
			"-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
		ln -sfn "$k8s_dir/$c" "$bin_dir/$c" ;;
	agnhost) build "$k8s_dir" "$here" k8s.io/kubernetes/test/images/agnhost agnhost "-s -w"
		ln -sfn "$k8s_dir/agnhost" "$bin_dir/agnhost" ;;
	coredns) build "$coredns_dir" "$here/coredns" . coredns "-s -w"
		ln -sfn "$coredns_dir/coredns" "$bin_dir/coredns" ;;
	netpol.test | conformance.test)
		# Keyed by the suite package's source too: a changed suite rebuilds.
		suite=${c%.test}
		out=$k8s_dir/$suite-$(cat "$here/$suite"/*.go | sha256sum | cut -c1-12).test
		if [ ! -x "$out" ]; then
			echo "building $c (the e2e framework: minutes cold)" >&2
			start=$SECONDS
			(cd "$here/$suite" && CGO_ENABLED=0 go test -c -trimpath -o "$out.tmp" .)
			mv "$out.tmp" "$out"
			echo "built $c in $((SECONDS - start))s" >&2
		fi
		ln -sfn "$out" "$bin_dir/$c" ;;
	anp.test)
		# The runner beside the pinned module's base manifests, which it
		# embeds, without the SCTP server containers (no SCTP here).
		if [ ! -x "$anp_dir/anp.test" ]; then
			echo "building anp.test (minutes cold)" >&2
			start=$SECONDS
			rm -rf "$anp_dir.tmp" && mkdir -p "$anp_dir.tmp"
			cp "$here/anp/go.mod" "$here/anp/go.sum" "$here/anp/anp_test.go" "$anp_dir.tmp/"
			npa=$(cd "$here/anp" && go list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api)
			cp -r "$npa/conformance/base" "$anp_dir.tmp/base" && chmod -R u+w "$anp_dir.tmp/base"
			awk '/^        - name: .*-900[35]$/ { skip = 1; next }
				skip && (/^        - name: / || /^---/) { skip = 0 }
				!skip' "$npa/conformance/base/manifests.yaml" >"$anp_dir.tmp/base/manifests.yaml"
			(cd "$anp_dir.tmp" && CGO_ENABLED=0 go test -c -trimpath -o anp.test .)
			rm -rf "$anp_dir" && mv "$anp_dir.tmp" "$anp_dir"
			echo "built anp.test in $((SECONDS - start))s" >&2
		fi
		ln -sfn "$anp_dir/anp.test" "$bin_dir/anp.test" ;;
	flanneld)
		# As flannel's image builds it: with cgo (its UDP backend's proxy
		# is C), linked statically; netgo and osusergo keep glibc's NSS out.
		if [ ! -x "$flannel_dir/flanneld" ]; then
			mkdir -p "$flannel_dir"
			echo "building flanneld (minutes cold)" >&2
			start=$SECONDS
			version=$(cd "$here/flannel" && go list -m -f '{{.Version}}' github.com/flannel-io/flannel)
			(cd "$here/flannel" && CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo \
				-ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$version -extldflags -static" \
				-o "$flannel_dir/.flanneld.tmp" github.com/flannel-io/flannel)
			mv "$flannel_dir/.flanneld.tmp" "$flannel_dir/flanneld"
			echo "built flanneld in $((SECONDS - start))s" >&2
		fi
		ln -sfn "$flannel_dir/flanneld" "$bin_dir/flanneld" ;;
	flannel-install-conf) build "$flannel_dir" "$here/flannel" github.com/flannel-io/flannel/cmd/install_conf flannel-install-conf "-s -w"
		ln -sfn "$flannel_dir/flannel-install-conf" "$bin_dir/flannel-install-conf" ;;
	kube-flannel.yml)
		if [ ! -f "$flannel_dir/kube-flannel.yml" ]; then
			mkdir -p "$flannel_dir"
			src=$(cd "$here/flannel" && go mod download -json github.com/flannel-io/flannel | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
			cp "$src/Documentation/kube-flannel.yml" "$flannel_dir/.kube-flannel.yml.tmp"
			mv "$flannel_dir/.kube-flannel.yml.tmp" "$flannel_dir/kube-flannel.yml"
		fi
		ln -sfn "$flannel_dir/kube-flannel.yml" "$bin_dir/kube-flannel.yml" ;;
	containerd2)
		# As containerd's Makefile stamps it (version.Version = the tag), so
		# the kubelet reports containerd://$containerd_version; static, no
		# btrfs (cgo-only). The shim sits beside containerd, and the e2e puts
		# this directory first on its PATH, so 2.x never runs 1.6's shim.
		for p in containerd ctr containerd-shim-runc-v2; do
			build "$containerd_dir" "$here/containerd" "github.com/containerd/containerd/v2/cmd/$p" "$p" \
				"-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
		done
		ln -sfn "$containerd_dir" "$bin_dir/containerd2" ;;
	*) echo "unknown component $c" >&2; exit 2 ;;
	esac
done
echo "$bin_dir"
