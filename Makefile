# make test is the project's test command (README, .ci/run): it installs what the tests need
# once, then runs every check CI runs.

GO        ?= go
TESTFLAGS ?= -race -timeout 25m

include hack/kube/kube.mk

.PHONY: test tools apt-tools ofrep-js-tools lint build
test: tools lint
	$(GO) test $(TESTFLAGS) ./...
	cd bench/slowdisk && $(GO) test $(TESTFLAGS) ./...

# tools installs what the tests use beyond Go: Debian packages (chromium for the web page,
# iproute2 and iptables for partition tests, nats-server for the relay), kube-apiserver and etcd for the webhook
# tests (built once into .bin/, reused), and the OpenFeature npm packages the OFREP tests
# drive (npm ci into hack/ofrep-js/node_modules, reused).
tools: apt-tools kube-tools ofrep-js-tools

apt-tools:
	bash hack/apt.sh

ofrep-js-tools:
	bash hack/ofrep-js.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd bench/slowdisk && $(GO) vet ./...

# build is a release build, as the Dockerfile's: no local paths (-trimpath), no symbol table
# or DWARF (-s -w: 37 MB instead of 53 MB; panics still print their stack traces).
VERSION ?=
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w -X main.version=$(VERSION)" -o .bin/sidecar ./cmd/sidecar
