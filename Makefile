# wsgate: `make run` starts everything on one machine; `make test` runs every test.
GO      ?= go
BIN     := bin
PKGS    := ./api/... ./services/internal/... ./services/edge/... ./services/dispatcher/... ./services/devstack/... ./clients/js/...
TEST_TIMEOUT ?= 9m

.PHONY: all build run test vet fmt-check test-go clean

all: build

## build: static binaries in bin/ (edge, dispatcher, wsgate-dev)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/edge ./services/edge/cmd/edge
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/dispatcher ./services/dispatcher/cmd/dispatcher
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/wsgate-dev ./services/devstack/cmd/wsgate-dev

## run: NATS (embedded), one edge and one dispatcher in one process, demo page URL printed
run: build
	./$(BIN)/wsgate-dev

## test: formatting, vet, every Go test with -race (the JS client's node tests run inside go test), static builds
test: fmt-check vet test-go build

fmt-check:
	@out=$$(gofmt -l api services clients); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

test-go:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

clean:
	rm -rf $(BIN)
