# Granary. The two commands: `make dev` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/granary
DEV_DIR ?= .dev

.PHONY: dev test deps deps-browser deps-s3 build proto vet fuzz clean bench-proxy bench-resize bench-failover bench-sizing bench-limits chaos

## dev: start a whole local cluster (Ctrl-C stops it) and print how to connect
dev: deps build
	$(BIN) dev --dir $(DEV_DIR)

## test: every test, against real redis-server processes
test: deps deps-browser deps-s3
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

## deps: install redis-server and redis-tools from Debian when missing
deps:
	@bash scripts/deps.sh redis-server redis-tools

## deps-browser: install Debian's chromium when missing (the dashboard's browser test drives it)
deps-browser:
	@bash scripts/deps.sh chromium

## deps-s3: build versitygw (pinned), the S3 server internal/objstore's tests run, into $(go env GOPATH)/bin when missing
deps-s3:
	@GO=$(GO) bash scripts/s3server.sh

build:
	$(GO) build -o $(BIN) ./cmd/granary

## proto: regenerate proto/*pb from proto/*.proto (protoc + pinned protoc-gen-go)
proto:
	bash scripts/proto.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)"

## fuzz: run every fuzz target briefly (FUZZTIME=30s to go longer)
FUZZTIME ?= 10s
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

## bench-proxy: proxy benchmark vs twemproxy and direct Redis (results in docs/benchmarks.md)
bench-proxy:
	bash scripts/bench-proxy.sh $(BENCH_ARGS)

## bench-resize: live resize, 50 MB 64M -> 256M under 2,000 confirmed writes/s (results in docs/benchmarks.md)
bench-resize:
	bash scripts/bench-resize.sh $(BENCH_ARGS)

## bench-failover: 20 master kills under confirmed writes, beside Redis Sentinel (BENCH_ARGS=--stop: hung masters; results in docs/benchmarks.md)
bench-failover:
	bash scripts/bench-failover.sh $(BENCH_ARGS)

## bench-sizing: the keeper's sampled db sizes against exact sums, 1k to 1M keys (results in docs/sizing.md)
bench-sizing: deps
	$(GO) test -tags sizingreport -count=1 -timeout 20m -v -run TestSizingReport ./keeper/

## bench-limits: a noisy tenant refused at its connection limit beside a quiet one, and an ops/s limit over 10 s (results in docs/benchmarks.md)
bench-limits: deps
	$(GO) test -tags limitsreport -count=1 -timeout 10m -v -run TestLimitsReport ./proxy/

## chaos: SIGKILL the metadb master 10 times under REST changes and proxy writes (TestMetadbKill; prints each kill's unavailability)
KILLS ?= 10
chaos: deps build
	$(GO) test -count=1 -timeout 15m -v -run 'TestMetadbKill$$' ./e2e/ -args -metadb-kills=$(KILLS)

clean:
	rm -rf bin $(DEV_DIR)
