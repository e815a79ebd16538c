# kdd-cni build, test and demo entry points. Run `make help` for the list.
SHELL := /bin/bash
export GOFLAGS := -buildvcs=false

MODULE   := github.com/kdd-cni/kdd-cni
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := $(CURDIR)/bin
LDFLAGS  := -s -w -X $(MODULE)/cni-plugin/pkg/buildinfo.Version=$(VERSION)
GOBUILD  := CGO_ENABLED=0 go build -trimpath
# Third-party CNI plugins and cnitool, built from the versions pinned in go.mod.
CNI_PLUGINS := github.com/containernetworking/plugins/plugins
THIRD_PARTY := $(CNI_PLUGINS)/ipam/host-local $(CNI_PLUGINS)/meta/portmap \
               $(CNI_PLUGINS)/main/loopback $(CNI_PLUGINS)/main/ptp \
               github.com/containernetworking/cni/cnitool
GOTEST   := go test -count=1
FUZZTIME ?= 10s

.PHONY: help build ours third-party tools deps test test-unit test-integration fuzz demo vet fmt clean

help:
	@echo "make demo    set up everything and run the local demo on a real control plane (root)"
	@echo "make test    build everything and run unit + integration tests (integration needs root)"
	@echo "make build   static binaries into bin/"
	@echo "make tools   build the pinned etcd/kube-apiserver/kube-controller-manager (cached)"

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

# Pinned control-plane binaries, built once into ~/.cache/kdd-cni and reused.
tools:
	@test/tools/build.sh >/dev/null

# Host packages the tests and the demo use (Debian/Ubuntu). Skipped when present.
deps:
	@missing=""; command -v ip >/dev/null || missing="$$missing iproute2"; command -v nft >/dev/null || missing="$$missing nftables"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

vet:
	go vet ./...
	@test -z "$$(gofmt -l cni-plugin ipam install kddctl test)" || { gofmt -l cni-plugin ipam install kddctl test; echo "gofmt needed"; exit 1; }

test-unit:
	$(GOTEST) ./cni-plugin/... ./ipam/... ./install/... ./kddctl/...

# Integration tests run as root against a real etcd + kube-apiserver in network
# namespaces; without root they skip with a message.
test-integration: build tools
	KDD_CNI_BIN=$(BIN) KDD_CNI_TOOLS=$$(test/tools/build.sh) $(GOTEST) -timeout 40m ./test/...

test: deps vet build tools
	KDD_CNI_BIN=$(BIN) KDD_CNI_TOOLS=$$(test/tools/build.sh) $(GOTEST) -timeout 40m ./...

demo: deps build tools
	KDD_CNI_BIN=$(BIN) KDD_CNI_TOOLS=$$(test/tools/build.sh) go run ./test/demo

clean:
	rm -rf $(BIN)
