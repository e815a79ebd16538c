# kdd-cni build, test and demo entry points. Run `make help` for the list.
SHELL := /bin/bash
export GOFLAGS := -buildvcs=false

MODULE   := github.com/kdd-cni/kdd-cni
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := $(CURDIR)/bin
LDFLAGS  := -s -w -X $(MODULE)/internal/buildinfo.Version=$(VERSION)
GOBUILD  := CGO_ENABLED=0 go build -trimpath
# Third-party CNI plugins and cnitool, built from the versions pinned in go.mod.
CNI_PLUGINS := github.com/containernetworking/plugins/plugins
THIRD_PARTY := $(CNI_PLUGINS)/ipam/host-local $(CNI_PLUGINS)/meta/portmap \
               $(CNI_PLUGINS)/main/loopback $(CNI_PLUGINS)/main/ptp \
               github.com/containernetworking/cni/cnitool
GOTEST   := go test -count=1
# An execution count, not a duration: a -fuzztime duration races Go's fuzz
# coordinator at the deadline and fails with a bare "context deadline
# exceeded" under load (go.dev/issue/75804, fixed in Go 1.27; we build with
# 1.26). 100000 runs take 3-9 s per target on the 2-core CI machine.
FUZZTIME ?= 100000x

MANIFEST_PARTS := conf/manifests/rbac-cni.yaml conf/manifests/rbac-install.yaml conf/manifests/admission-node-scope.yaml \
                  conf/manifests/configmap.yaml conf/manifests/daemonset.yaml conf/manifests/calico-node.yaml \
                  conf/manifests/typha.yaml

# What the image holds (see Dockerfile): the same files, built here without Docker.
ROOTFS     := $(CURDIR)/build/rootfs
IMAGE_BINS := calico podcidr install-cni kddctl host-local portmap loopback

# go test -fuzz targets (package:Target); make test runs each for FUZZTIME.
FUZZ_TARGETS := ./internal/netconf:FuzzLoad ./internal/netconf:FuzzParseIdentity \
                ./internal/podcidr:FuzzRewrite ./cni-plugin/internal/plan:FuzzPrevResult

# The environment every suite reads: our binaries, the image's files, the
# pinned tools (the base set, or those named: $(call SUITE_ENV,tool ...)) and
# Calico's binaries, each built once into ~/.cache/kdd-cni.
SUITE_ENV = KDD_CNI_BIN=$(BIN) KDD_CNI_ROOTFS=$(ROOTFS) KDD_CNI_TOOLS=$$($(CURDIR)/test/tools/build.sh $(1)) \
            KDD_CNI_CALICO=$$($(CURDIR)/test/tools/calico/build.sh)

.PHONY: calico calico-crds e2e netpol k8s-conformance anp flannel bench faults image-rootfs manifests help build ours third-party tools deps test test-unit test-integration fuzz demo vet fmt clean

help:
	@echo "make demo    set up everything and run the local demo on a real control plane (root)"
	@echo "make test    build everything and run unit + integration tests (integration needs root)"
	@echo "make build   static binaries into bin/"
	@echo "make tools   build the pinned etcd/kube-apiserver/kube-controller-manager (cached)"
	@echo "make bench   benchmarks vs the ptp + host-local baseline, results/ (root)"
	@echo "make faults  the long fault-injection run, 1000 cycles (root)"
	@echo "make k8s-conformance  Kubernetes' sig-network Conformance specs on a two-node cluster (root)"
	@echo "make flannel  the kubeadm + flannel install (VXLAN, host-gw) on a two-node cluster (root)"

build: ours third-party

ours:
	@mkdir -p $(BIN)
	$(GOBUILD) -ldflags '$(LDFLAGS)' -o $(BIN)/calico ./cni-plugin
	$(GOBUILD) -ldflags '$(LDFLAGS)' -o $(BIN)/podcidr ./ipam
	$(GOBUILD) -ldflags '$(LDFLAGS)' -o $(BIN)/install-cni ./install
	$(GOBUILD) -ldflags '$(LDFLAGS)' -o $(BIN)/kddctl ./kddctl

third-party:
	@mkdir -p $(BIN)
	@for p in $(THIRD_PARTY); do \
		echo "$(GOBUILD) -o $(BIN)/$$(basename $$p) $$p"; \
		$(GOBUILD) -ldflags '-s -w' -o $(BIN)/$$(basename $$p) $$p || exit 1; \
	done

# Pinned control-plane binaries and Calico's Felix + calico (for the
# compatibility suite), built once into ~/.cache/kdd-cni and reused.
tools:
	@test/tools/build.sh >/dev/null
	@test/tools/calico/build.sh >/dev/null

# Host packages the tests and the demo use (Debian/Ubuntu), and the shell
# tools the Kubernetes e2e specs' images carry. Skipped when present.
deps:
	@missing=""; command -v ip >/dev/null || missing="$$missing iproute2"; command -v nft >/dev/null || missing="$$missing nftables"; \
	command -v containerd >/dev/null || missing="$$missing containerd"; command -v runc >/dev/null || missing="$$missing runc"; \
	command -v iptables-nft-restore >/dev/null || missing="$$missing iptables"; command -v ipset >/dev/null || missing="$$missing ipset"; \
	command -v busybox >/dev/null || missing="$$missing busybox-static"; command -v dig >/dev/null || missing="$$missing bind9-dnsutils"; \
	command -v nc.openbsd >/dev/null || missing="$$missing netcat-openbsd"; command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

vet:
	go vet ./...
	cd test/bench && go vet ./...
	@test -z "$$(gofmt -l internal cni-plugin ipam install kddctl test)" || { gofmt -l internal cni-plugin ipam install kddctl test; echo "gofmt needed"; exit 1; }

test-unit:
	$(GOTEST) ./internal/... ./cni-plugin/... ./ipam/... ./install/... ./kddctl/...

# Integration tests run as root against a real etcd + kube-apiserver in network
# namespaces; without root they skip with a message.
test-integration: build image-rootfs tools
	$(SUITE_ENV) $(GOTEST) -timeout 40m ./test/...

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($(FUZZTIME))"; \
		go test -run='^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) $${t%%:*} || exit 1; \
	done

# Everything: unit, fuzz (short), integration, conformance, install, faults
# (short), then the end-to-end node on its own so its latency figures are
# not disturbed by the other suites.
test: deps vet build image-rootfs tools fuzz
	$(SUITE_ENV) $(GOTEST) -timeout 40m $$(go list ./... | grep -v /test/e2e)
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory netpol
	$(MAKE) --no-print-directory k8s-conformance
	$(MAKE) --no-print-directory anp
	$(MAKE) --no-print-directory flannel

demo: deps build image-rootfs tools
	$(SUITE_ENV) go run ./test/demo

image-rootfs: build
	rm -rf $(ROOTFS) && mkdir -p $(ROOTFS)/opt/cni/bin $(ROOTFS)/etc/kdd-cni
	for b in $(IMAGE_BINS); do install -m 0755 $(BIN)/$$b $(ROOTFS)/opt/cni/bin/$$b; done
	install -m 0644 conf/10-calico.conflist.template $(ROOTFS)/etc/kdd-cni/10-calico.conflist.template

# The compatibility suite alone: Calico's Felix and calico binary with ours.
calico: deps build tools
	$(SUITE_ENV) $(GOTEST) -v -timeout 20m ./test/calico

# End to end: kubelet + containerd + runc: one node on Debian's containerd
# 1.6 and one on containerd 2.x (built from test/tools/containerd), Felix
# beside one, the two-node install from the manifests on a node of each (root).
E2E_TOOLS := etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet
e2e: deps build image-rootfs
	$(call SUITE_ENV,$(E2E_TOOLS) kubectl containerd2) \
		$(GOTEST) -v -timeout 30m -skip 'TestNetworkPolicySuite|TestSigNetworkConformance|TestAdminNetworkPolicySuite|TestFlannelInstall' ./test/e2e

# Kubernetes' own NetworkPolicy e2e specs on a kdd-cni node with Felix (root).
netpol: deps build image-rootfs
	$(call SUITE_ENV,$(E2E_TOOLS) agnhost netpol.test flanneld flannel-install-conf kube-flannel.yml) \
		$(GOTEST) -v -timeout 60m -run TestNetworkPolicySuite ./test/e2e

# Kubernetes' sig-network Conformance specs (all 47) on a two-node kdd-cni
# cluster with Felix, kube-proxy and CoreDNS (root).
k8s-conformance: deps build image-rootfs
	$(call SUITE_ENV,$(E2E_TOOLS) kubectl agnhost coredns conformance.test) \
		$(GOTEST) -v -timeout 90m -run TestSigNetworkConformance ./test/e2e

# The network-policy-api conformance suite (AdminNetworkPolicy and
# BaselineAdminNetworkPolicy core tests) on a two-node kdd-cni cluster with Felix (root).
anp: deps build image-rootfs
	$(call SUITE_ENV,$(E2E_TOOLS) agnhost anp.test) \
		$(GOTEST) -v -timeout 60m -run TestAdminNetworkPolicySuite ./test/e2e

# The seeds' "kubeadm + flannel" install: kdd-cni's manifest, then flannel
# v0.28.10's (VXLAN, then host-gw) routing two nodes, with Felix (root).
flannel: deps build image-rootfs
	$(call SUITE_ENV,$(E2E_TOOLS) flanneld flannel-install-conf kube-flannel.yml) \
		$(GOTEST) -v -timeout 30m -run TestFlannelInstall ./test/e2e

# Benchmarks against the ptp + host-local baseline (docs/performance.md).
bench: deps build tools
	cd test/bench && $(SUITE_ENV) go run . -out $(CURDIR)/results

# The long fault-injection run (docs/reliability.md); make test runs a short one.
FAULT_CYCLES ?= 1000
faults: build tools
	$(SUITE_ENV) KDD_FAULT_CYCLES=$(FAULT_CYCLES) \
		$(GOTEST) -v -timeout 60m -run TestFaultInjection ./test/faults

# The one-file install (kubectl apply -f conf/kdd-cni.yaml) and the addon
# manager's split (conf/addons/), generated from the parts.
ADDON_HEADER := \# For the addon manager (kube-addon-manager). Generated by 'make manifests' from conf/manifests/ \
                with the addonmanager.kubernetes.io/mode label; edit those instead.
manifests:
	@{ cat conf/configmap.head.yaml; sed 's/^/    /' conf/10-calico.conflist.template; } > conf/manifests/configmap.yaml
	@{ echo "# kdd-cni: kubectl apply -f conf/kdd-cni.yaml"; \
	   echo "# Generated by 'make manifests' from conf/manifests/; edit those instead."; \
	   for f in $(MANIFEST_PARTS); do echo "---"; cat $$f; done; } > conf/kdd-cni.yaml
	@{ echo "$(ADDON_HEADER)"; awk -f conf/addons.awk conf/manifests/configmap.yaml; } > conf/addons/kdd-cni-configmap.yaml
	@{ echo "$(ADDON_HEADER)"; for f in $(filter-out conf/manifests/configmap.yaml,$(MANIFEST_PARTS)); do \
	     echo "---"; awk -f conf/addons.awk $$f; done; } > conf/addons/kdd-cni-daemonset.yaml

# Calico's CRDs of the pinned release, which Felix (calico-node) needs, and
# the AdminNetworkPolicy CRDs Calico ships with it:
# kubectl apply --server-side -f conf/calico-crds.yaml (before conf/kdd-cni.yaml).
calico-crds:
	@crds=$$(test/tools/calico/build.sh)/crds; \
	{ echo "# Calico v3.31.0's crd.projectcalico.org CRDs, for Felix in policy-only mode, and the"; \
	  echo "# policy.networking.k8s.io (AdminNetworkPolicy, BaselineAdminNetworkPolicy) CRDs it ships."; \
	  echo "# kubectl apply --server-side -f conf/calico-crds.yaml (too large for a client-side apply)"; \
	  echo "# Generated by 'make calico-crds' from the pinned Calico module."; \
	  for f in $$crds/crd.projectcalico.org_*.yaml $$crds/policy.networking.k8s.io_*.yaml; do echo "---"; cat $$f; done; } > conf/calico-crds.yaml

clean:
	rm -rf $(BIN) build
