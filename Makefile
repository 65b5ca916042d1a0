# wsgate: `make run` starts everything on one machine; `make test` runs every test.
GO      ?= go
BIN     := bin
PKGS    := ./api/... ./services/internal/... ./services/edge/... ./services/dispatcher/... ./services/devstack/... ./clients/js/... ./bench/...
TEST_TIMEOUT ?= 15m
VERSION    ?= 0.1.0
IMAGE_REPO ?= wsgate

.PHONY: all build run test deps vet lint fmt-check test-go skipped fuzz fuzz-short test-chart image-contexts images bench microbench clean

all: build

## build: static binaries in bin/ (edge, dispatcher, wsgate-dev)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/edge ./services/edge/cmd/edge
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/dispatcher ./services/dispatcher/cmd/dispatcher
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/wsgate-dev ./services/devstack/cmd/wsgate-dev

## run: NATS (embedded), one edge and one dispatcher in one process, demo page URL printed
run: build
	GODEBUG=$${GODEBUG:+$$GODEBUG,}schedtrace=2147483647 ./$(BIN)/wsgate-dev

## test: the tools the tests need (deps), formatting, vet, staticcheck (lint), every Go test with -race (the JS client's
## node tests and the browser tests run inside go test), a short fuzz run, static builds; it ends with
## a loud list of the tests that skipped for want of a tool, and the command that installs it
test: deps fmt-check vet lint test-go fuzz-short test-chart build image-contexts skipped

# Where make test notes the tools .ci/deps could not install, and where the tests append their skips
# (WSGATE_SKIP_LOG): go test shows a skip only with -v, so `skipped` lists them at the end.
MISSING  := $(CURDIR)/$(BIN)/.test-missing
SKIP_LOG := $(CURDIR)/$(BIN)/.test-skipped

## deps: Node.js, Chromium, curl and gcc, installed with apt-get when missing and running as root
## (INSTALL_DEPS=0: never install); what is still missing is listed at the end of make test
deps:
	@.ci/deps $(MISSING)

## skipped: the list of what make test could not run, and how to install what it needs (silent when none)
skipped:
	@.ci/skipped $(MISSING) $(SKIP_LOG)

fmt-check:
	@out=$$(gofmt -l api services clients charts bench 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

## lint: staticcheck (pinned, installed from the Go module proxy into bench/.bin on first use) over every
## package of every module of the workspace: PKGS plus the chart's module; `make lint` runs it alone
STATICCHECK_VERSION := 0.8.2
STATICCHECK         := bench/.bin/staticcheck
lint:
	@$(STATICCHECK) -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION))' || GOBIN=$(CURDIR)/bench/.bin GOWORK=off $(GO) install honnef.co/go/tools/cmd/staticcheck@v$(STATICCHECK_VERSION)
	$(STATICCHECK) $(PKGS) ./charts/...

test-go:
	@mkdir -p $(BIN) && rm -f $(SKIP_LOG)
	WSGATE_SKIP_LOG=$(SKIP_LOG) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS) || { .ci/skipped $(MISSING) $(SKIP_LOG); exit 1; }

## fuzz: every Fuzz target of FUZZ_PKGS for FUZZTIME inputs each, one at a time (go test -fuzz takes
## one target per run); a failure stops make and leaves the input in <pkg>/testdata/fuzz/<target>/.
## Plain `go test` already runs every target's seed corpus. Targets are found in the _test.go
## files (cheaper than `go test -list`, which links and runs each test binary once more).
FUZZ_PKGS := ./api/wire ./services/edge/internal/auth ./services/edge/internal/wsconn
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can fail a clean run with
# "context deadline exceeded" when -fuzztime ends (golang/go#75804, fixed in Go 1.27).
FUZZTIME  ?= 1000000x
fuzz:
	@for pkg in $(FUZZ_PKGS); do \
		names=$$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$pkg/*_test.go); \
		[ -n "$$names" ] || { echo "no Fuzz targets in $$pkg"; exit 1; }; \
		for name in $$names; do \
			echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

## fuzz-short: the same, 20,000 inputs per target (a few seconds each; part of make test)
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

## test-chart: lint and render the Helm chart with the Helm SDK (no cluster, no helm binary, no network);
## kept out of -race: the Helm/Kubernetes libraries are slow to build with it
test-chart:
	cd charts && $(GO) vet ./... && $(GO) test -count=1 ./...

## image-contexts: each service built from only what its Dockerfile copies, without go.work and
## without Docker (part of make test: proves the images' build stage would succeed)
image-contexts:
	.ci/image-contexts

## images: edge and dispatcher images (needs a Docker engine; the context is the repo root)
images:
	docker build -f services/edge/Dockerfile -t $(IMAGE_REPO)/edge:$(VERSION) .
	docker build -f services/dispatcher/Dockerfile -t $(IMAGE_REPO)/dispatcher:$(VERSION) .

## bench: wsgate and Centrifugo v6.9.1 side by side under load (~35 min on 2 cores: broadcast with both client modes,
## with and without GODEBUG, and Centrifugo's unicast per publishing path included) -> docs/PERFORMANCE.md
bench: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall ./cmd/floor
	test -x bench/.bin/centrifugo || GOBIN=$(CURDIR)/bench/.bin $(GO) install github.com/centrifugal/centrifugo/v6@v6.9.1
	ulimit -n $$(ulimit -Hn) && bench/.bin/benchall -set standard -runs 3 -out docs/PERFORMANCE.md

## bench-scale: wsgate on K = 1, 2, 4, 8 edges, on one NATS server and on a 3-node NATS cluster
## (idle, unicast, broadcast at each K; ~1 h on 2 cores at the default 20,000 connections) -> docs/SCALING.md
## and its pictures in docs/plots; bench/.bin/benchall -h lists the set's flags (-conns, -edges, -client ...)
.PHONY: bench-scale
bench-scale: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall
	ulimit -n $$(ulimit -Hn) && bench/.bin/benchall -set scale -runs 3 -out docs/SCALING.md

## bench-scale60k: the scale set at 60,000 connections (K = 4 and 8 edges only: one edge holds at most
## ~19,990 with a 20,000 open-files limit; broadcast at 1 msg/s, 60,000 deliveries each) -> docs/perf/scale60k.md
.PHONY: bench-scale60k
bench-scale60k: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall
	ulimit -n $$(ulimit -Hn) && bench/.bin/benchall -set scale -runs 1 -edges 4,8 -nats-nodes 1,3 -conns 60000 \
		-broadcast-conns 60000 -hold 30s -duration 10s -unicast-rate 4000 -broadcast-rate 1 -messages 30 -out docs/perf/scale60k.md

## bench-recovery: issue 16's recovery figures on real processes (natsd with JetStream, edges with WS_HISTORY=file):
## longrun (1,000,000 messages to 10,000 users across ~16 edge SIGKILLs, 0 lost/duplicated or it fails),
## catchup (1,000 clients catch up 100 missed messages), storm (10,000 reconnect with since within 10 s beside
## 500 bystanders); ~12 min on 2 cores -> docs/perf/recovery.md; bench/.bin/recovery -h lists the flags
.PHONY: bench-recovery
bench-recovery: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/natsd ./cmd/recovery
	ulimit -n $$(ulimit -Hn) && bench/.bin/recovery -scenario all -storage file -out docs/perf/recovery.md

## bench-tabs: the JS client's shared mode against a connection per tab: 10,000 users with 3 tabs each
## idle on 2 edges (30,000 connections, then 10,000), the edges' memory summed (memory only, so any
## machine will do; ~3 min) -> docs/perf/tabs.md
.PHONY: bench-tabs
bench-tabs: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall
	ulimit -n $$(ulimit -Hn) && bench/.bin/benchall -set tabs -runs 3 -out docs/perf/tabs.md

## bench-history: the cost of WS_HISTORY: unicast (10,000 users, 12,000 msg/s) and broadcast (10,000
## connections, 5 msg/s) with history off and on, interleaved, 3 runs each, against issue 16's targets,
## then NATS memory per stored subject and message at 100,000 users (~8 min on 2 cores) -> docs/perf/history.md
.PHONY: bench-history
bench-history: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall
	ulimit -n $$(ulimit -Hn) && bench/.bin/benchall -set history -runs 3 -out docs/perf/history.md

## bench-presence: rooms and presence (issue 18): join in force on K = 2, 4 edges, memory and idle CPU per connection
## with presence off and on, a soak of 100 edge SIGKILLs with 3,000 reconnecting users, group counts of a group of
## 100,000 members (~15 min on 2 cores) -> docs/perf/presence.md; exits 1 on a ghost or a missing/duplicated event
.PHONY: bench-presence
bench-presence: build
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/presence
	ulimit -n $$(ulimit -Hn) && bench/.bin/presence -out docs/perf/presence.md

## bench-inbound: reliable inbound (issue 17): core vs reliable echo at 5,000/s and stepped up, 3 runs interleaved;
## the long run of 1,000,000 reliable actions through SIGKILLs of the dispatcher and the edges (exits non-zero on
## any loss or double handling); NATS memory per message id in the dedupe window (~25 min on 2 cores) -> docs/perf/inbound.md
.PHONY: bench-inbound
bench-inbound: build
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/counthandler ./services/devstack/cmd/counthandler
	cd bench && GOWORK=off $(GO) build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall ./cmd/inboundrun ./cmd/inboundmem
	ulimit -n $$(ulimit -Hn) && bench/.bin/benchall -set inbound -runs 3 -out docs/perf/inbound.md

## microbench: micro-benchmarks of the wire format and of wsconn (-count 6, -benchmem); raw output in
## bench/results/micro/micro.txt, then benchstat's table of it (docs/MICROBENCH.md has figures and the
## edge's end-to-end before/after comparison)
MICROBENCH_PKGS := ./api/wire ./services/edge/internal/wsconn
BENCHSTAT       := bench/.bin/benchstat
microbench:
	test -x $(BENCHSTAT) || GOBIN=$(CURDIR)/bench/.bin GOWORK=off $(GO) install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
	mkdir -p bench/results/micro
	$(GO) test -run '^$$' -bench . -benchmem -count 6 $(MICROBENCH_PKGS) > bench/results/micro/micro.txt || { cat bench/results/micro/micro.txt; exit 1; }
	$(BENCHSTAT) bench/results/micro/micro.txt

clean:
	rm -rf $(BIN)
