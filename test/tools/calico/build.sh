#!/usr/bin/env bash
# Builds Calico's Felix (calico-felix), Typha (calico-typha) and Calico's
# own `calico` CNI binary from a pinned Calico release (v3.31.0), for the
# compatibility tests. The Calico monorepo is served by the Go module proxy
# as a pseudo-version; its nested modules api/ and lib/std come as their own
# modules, lib/httpmachinery (imported by none of them) is an empty module. Every module's h1: hash is
# pinned below (the checksum database has no record of these pseudo-versions).
# The source tree is assembled once into the cache and the binaries are cached
# beside it. Prints the cache directory (holding calico-felix, calico-typha,
# calico, crds/).
#
# usage: build.sh
set -euo pipefail

calico_mod=github.com/projectcalico/calico
calico_ver=v0.0.0-20251021213802-b1f3c43f8437 # v3.31.0
calico_sum=h1:PbLe6D0Yis8ce4F+o/Dmlrv4Her2ZN6ns8rmlZoFoEY=
api_mod=github.com/projectcalico/api
api_ver=v0.0.0-20251022175904-f2ab03771208 # v3.31.0's api/
api_sum=h1:ltTWo/cCc/8pEpzmlzIjt6r2383x2XDPkuBcd/9kE3k=
std_mod=github.com/projectcalico/calico/lib/std
std_ver=$calico_ver
std_sum=h1:iLY3Uzt4pVX3jpS9Wt+mxakq1nfzN/32t6YZK9n7p/U=

# reflect2, under Calico's json-iterator, predates Go 1.26's rule for what
# an interface holds directly: it decodes a pointer-shaped struct with a
# zero-size field (Calico's uniquelabels.Map) as if held indirectly, and
# Typha panics encoding the first label map it sends. The one-function patch
# beside this script teaches it Go 1.26's rule (golang.org/cl/681937);
# Calico's own code is built unchanged.
reflect2_mod=github.com/modern-go/reflect2
reflect2_ver=v1.0.2
reflect2_sum=h1:xBagoLtFs94CBntxluKeaWgTMpvLxC4ur3nMaC9Gz0M=
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cache_root=${KDD_CNI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kdd-cni}
out=$cache_root/calico-v3.31.0-${calico_ver##*-}-$(sha256sum "$here/reflect2-go1.26.patch" | cut -c1-8)
src=$out/src
export GONOSUMDB=github.com/projectcalico GOFLAGS=-mod=mod

fetch() { # module version sum → prints the module's directory
	local json dir sum
	json=$(cd /tmp && go mod download -json "$1@$2")
	dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
	sum=$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$json")
	if [ "$sum" != "$3" ]; then
		echo "checksum mismatch for $1@$2: got $sum, pinned $3" >&2
		exit 1
	fi
	echo "$dir"
}

assemble() {
	[ -f "$src/.complete" ] && return 0
	rm -rf "$src" && mkdir -p "$out"
	local tmp=$out/.src.tmp
	rm -rf "$tmp"
	cp -r "$(fetch $calico_mod $calico_ver $calico_sum)" "$tmp"
	chmod -R u+w "$tmp"
	rm -rf "$tmp/api" "$tmp/lib/std" "$tmp/lib/httpmachinery"
	cp -r "$(fetch $api_mod $api_ver $api_sum)" "$tmp/api"
	cp -r "$(fetch $std_mod $std_ver $std_sum)" "$tmp/lib/std"
	chmod -R u+w "$tmp/api" "$tmp/lib/std"
	mkdir -p "$tmp/lib/httpmachinery"
	printf 'module %s/lib/httpmachinery\n\ngo 1.24\n' $calico_mod >"$tmp/lib/httpmachinery/go.mod"
	mkdir -p "$tmp/third_party"
	cp -r "$(fetch $reflect2_mod $reflect2_ver $reflect2_sum)" "$tmp/third_party/reflect2"
	chmod -R u+w "$tmp/third_party/reflect2"
	# git as a patch tool: the ceiling keeps it from a repository around the cache.
	(cd "$tmp/third_party/reflect2" && GIT_CEILING_DIRECTORIES="$tmp/third_party" git apply "$here/reflect2-go1.26.patch")
	grep -q 'golang.org/cl/681937' "$tmp/third_party/reflect2/reflect2.go" || {
		echo "reflect2-go1.26.patch did not apply" >&2
		exit 1
	}
	(cd "$tmp" && go mod edit -replace $reflect2_mod=./third_party/reflect2)
	touch "$tmp/.complete"
	mv "$tmp" "$src"
}

build() { # package output
	[ -x "$out/$2" ] && return 0
	echo "building $2 from Calico v3.31.0 (cold builds take minutes; cached in $out)" >&2
	local start=$SECONDS
	(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/.$2.tmp" "./$1")
	mv "$out/.$2.tmp" "$out/$2"
	echo "built $2 in $((SECONDS - start))s" >&2
}

assemble
build felix/cmd/calico-felix calico-felix
build typha/cmd/calico-typha calico-typha
build cni-plugin/cmd/calico calico
ln -sfn "$src/libcalico-go/config/crd" "$out/crds"
echo "$out"
