# syntax=docker/dockerfile:1
# The ctxprop sidecar image: one statically linked binary on a slim Debian base that carries the
# iptables binaries (legacy and nft) `sidecar intercept` drives. The same image runs the sidecar
# (`sidecar run`, the default), the init container that installs the redirection rules
# (`sidecar intercept`), the injector (`sidecar webhook`) and the exec probes the injector adds
# (`sidecar probe`). Nothing is fetched at run time.
#
#   docker build -t REGISTRY/ctxprop/sidecar:TAG --build-arg VERSION=TAG .

FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=""
# CGO off: a static binary that needs no libc. timetzdata: time zones without /usr/share/zoneinfo.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -tags timetzdata \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/sidecar ./cmd/sidecar
# The working directory of the image, owned by the unprivileged user, so that the default
# relative store path (data/ctxprop.db) is writable under plain `docker run`. In Kubernetes the
# injector points the store at a volume instead.
RUN mkdir -p /out/var/lib/ctxprop/data

FROM debian:trixie-slim
# iptables: iptables-legacy and iptables-nft with their -save and -restore, for IPv4 and IPv6
# (sidecar intercept picks the flavour the node uses, as istio-iptables does).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
# Root certificates for TLS to OTLP collectors and xDS servers.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build --chown=65532:65532 /out/var/lib/ctxprop /var/lib/ctxprop
COPY --from=build /out/sidecar /sidecar
USER 65532:65532
WORKDIR /var/lib/ctxprop
# 7400 admin (loopback only), 7401 inbound, 7402 outbound (loopback), 7403 peer sync, 8443 webhook.
EXPOSE 7401 7403 8443
ENTRYPOINT ["/sidecar"]
CMD ["run", "-config", "/etc/ctxprop/config.hcl"]
