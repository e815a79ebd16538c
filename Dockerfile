# kdd-cni image: install-cni plus every binary it installs into /opt/cni/bin.
# Build: docker build -t kdd-cni:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN make build VERSION=${VERSION}

# No shell, no package manager: just the static binaries.
FROM scratch
COPY --from=build /src/bin/calico /src/bin/podcidr /src/bin/install-cni /src/bin/kddctl \
     /src/bin/host-local /src/bin/portmap /src/bin/loopback /opt/cni/bin/
COPY conf/10-calico.conflist.template /etc/kdd-cni/10-calico.conflist.template
# Matches `make image-rootfs`, which tests install-cni from the same tree.
ENTRYPOINT ["/opt/cni/bin/install-cni"]
