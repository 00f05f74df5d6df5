# asyncgate — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
PKGS  := ./...

.PHONY: help run test verify deps brokers lint lint-spec lint-kube vet fmt bench chaos build docker clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

run: ## run everything in one process (in-memory Redis, simulator)
	$(GO) run ./cmd/asyncgate dev

deps: ## install what the tests need (redis-server, redis-cli, strace for the chaos suite's host crash, chromium for the browser test) when it is missing
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "installing redis-server with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	fi
	@redis-server --version
	@if ! command -v redis-cli >/dev/null 2>&1; then \
		echo "installing redis-tools with apt-get (redis-cli joins the test Redis Clusters)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-tools >/dev/null; \
	fi
	@redis-cli --version
	@if ! command -v strace >/dev/null 2>&1; then \
		echo "installing strace with apt-get (the chaos suite learns from it what Redis fsynced)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq strace >/dev/null; \
	fi
	@strace -V | head -1
	@if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then \
		echo "installing chromium with apt-get (internal/browser drives it headless)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi
	@chromium --version 2>/dev/null

brokers: ## start RabbitMQ and NATS JetStream for the destination tests when they are down (installs them when absent)
	@bash internal/brokertest/brokers.sh

test: deps brokers verify ## the whole test suite, with the race detector; benchmarks run once to keep them compiling
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -timeout 15m $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m $(PKGS)

verify: ## regenerate client/ and fail on a diff
	cd client && $(GO) generate ./... && git diff --exit-code -- .

lint: vet lint-spec lint-kube ## go vet, gofmt, the OpenAPI linter and the Kubernetes manifests' schemas
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)

lint-spec: ## lint openapi.yaml with Redocly and Spectral (installed from npm on first use)
	npx --yes @redocly/cli@2.77.0 lint openapi.yaml
	npx --yes @stoplight/spectral-cli@6.16.3 lint --fail-severity=hint openapi.yaml

lint-kube: ## validate deploy/kubernetes against the Kubernetes schemas (kubeconform, installed on first use; skipped offline)
	@GO=$(GO) bash deploy/kubeconform.sh

vet:
	$(GO) vet $(PKGS)

bench: deps brokers ## load and speed figures (long): Go benchmarks, the load test under strict durability with issue 16's table (api, worker, sim as processes; 5 minutes of RSS), the outage figures, the scale table (1 vs 2 workers; 3-master cluster, 1 vs 16 queue shards)
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	LOAD_APPENDFSYNC=always $(GO) test -tags bench -run TestLoad -v -timeout 30m ./internal/loadtest/
	$(GO) test -tags bench -run TestOutageFigures -v -timeout 20m ./internal/chaos/
	$(GO) test -tags bench -run TestScaleFigures -v -timeout 30m ./internal/chaos/

chaos: deps ## the invariants under every fault (kills, Redis crashes, outages, slow peers; Sentinel and Cluster failovers, SIGTERM, 1,000 orders on a 3-master cluster with 2 API + 2 workers), separate processes (about 15 minutes)
	ASYNCGATE_CHAOS=long $(GO) test -race -v -timeout 40m ./internal/chaos/...

build: ## build bin/asyncgate
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/asyncgate ./cmd/asyncgate

docker: ## build the container image
	docker build -t asyncgate .

clean:
	rm -rf bin
