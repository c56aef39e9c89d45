# logferry — build, test and run the whole system.
#   make demo   run the whole system locally on embedded defaults
#   make test   run every test (race detector on)

GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/$(BIN)/tools
PKG       := github.com/logferry/logferry
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w \
	-X $(PKG)/internal/version.Version=$(VERSION) \
	-X $(PKG)/internal/version.Commit=$(COMMIT) \
	-X $(PKG)/internal/version.Date=$(DATE)
BINARIES  := logagent coordinator logctl devstack fleetsim
STATICCHECK_VERSION := v0.8.2
# go test's own timeout: the whole suite is meant to take a few minutes.
TEST_TIMEOUT ?= 15m

.PHONY: all build package package-test test system-test test-short fuzz bench pgo lint vet staticcheck fmt fmt-check tidy-check demo chaos scale clean help

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build every binary into bin/, version stamped
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		if [ -f cmd/$$b/main.go ]; then \
			echo "go build $$b"; \
			CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$b ./cmd/$$b || exit 1; \
		fi; \
	done

# Packages: .deb and .rpm of logagent, coordinator and logctl, with the
# systemd units, sysusers.d files and /etc/default files (deploy/nfpm/*.yaml),
# built by nfpm. nfpm is pinned in tools/go.mod, a module of its own so that
# its dependencies stay out of logferry's go.mod. A package version must
# start with a digit: v1.2.3 gives 1.2.3, an untagged commit 0.0.0+<commit>.
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
PKG_VERSION ?= $(shell echo '$(VERSION)' | sed -E 's/^v//; /^[0-9]+\.[0-9]/!s/^/0.0.0+/; s/-/./g')
PKG_DIR     := $(BIN)/packages
PACKAGES    := logagent coordinator logctl

$(TOOLS)/nfpm: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o $(TOOLS)/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm

package: $(TOOLS)/nfpm ## build .deb and .rpm packages of logagent, coordinator and logctl into bin/packages/
	@rm -rf $(PKG_DIR) && mkdir -p $(BIN)/linux $(PKG_DIR)
	@for b in $(PACKAGES); do \
		echo "go build $$b (linux/$(PKG_ARCH))"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux/$$b ./cmd/$$b || exit 1; \
	done
	@for b in $(PACKAGES); do for f in deb rpm; do \
		VERSION='$(PKG_VERSION)' ARCH='$(PKG_ARCH)' $(TOOLS)/nfpm package --config deploy/nfpm/$$b.yaml --packager $$f --target $(PKG_DIR)/ || exit 1; \
	done; done
	@ls -l $(PKG_DIR)

package-test: package ## install the .debs into a scratch root (dpkg -x) and check their files and units (needs dpkg)
	LOGFERRY_PACKAGES=$(CURDIR)/$(PKG_DIR) $(GO) test -count=1 -run 'TestPackages' -v ./deploy/

test: ## run every test with the race detector (fuzz seed corpora included)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

system-test: ## only the system tests: the whole system as processes, with and without faults (also part of make test)
	$(GO) test -race -count=1 -run 'TestSystem' -v ./cmd/devstack/

test-short: ## the fast subset
	$(GO) test -race -short -count=1 ./...

FUZZTIME ?= 30s
fuzz: ## run the fuzz targets for FUZZTIME each
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./pkg/topics/

# The footprint benchmark measures rsyslog next to the agent when rsyslogd
# and its omkafka module are installed (if not, it skips rsyslog and says why);
# FOOTPRINT_RSYSLOG=0 leaves rsyslog out.
FOOTPRINT_RSYSLOG ?= 1
bench: ## run the benchmarks once each and print their figures (rsyslog next to the agent's footprint if installed)
	FOOTPRINT_RSYSLOG=$(FOOTPRINT_RSYSLOG) $(GO) test -run '^$$' -bench . -benchtime 1x -benchmem -timeout 60m ./...

# The agent is built with profile-guided optimisation: go build uses
# cmd/logagent/default.pgo, a CPU profile of the agent shipping a file
# (BenchmarkShipFile). Refresh it when the shipping path changes.
pgo: ## refresh cmd/logagent/default.pgo from two profiled runs of the agent's benchmark
	@mkdir -p $(BIN)
	for i in 1 2; do \
		BENCH_RUNS=1 BENCH_LINES=4000000 BENCH_CPUPROFILE=$(CURDIR)/$(BIN)/pgo$$i.prof BENCH_CPUPROFILE_SECONDS=3 \
			$(GO) test -run '^$$' -bench BenchmarkShipFile -benchtime 1x ./cmd/logagent || exit 1; \
	done
	$(GO) tool pprof -proto $(BIN)/pgo1.prof $(BIN)/pgo2.prof > $(BIN)/default.pgo
	mv $(BIN)/default.pgo cmd/logagent/default.pgo # only a whole profile replaces the old one

lint: vet staticcheck fmt-check tidy-check ## every static check

vet:
	$(GO) vet ./...

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck ./...

fmt: ## gofmt every file
	gofmt -w $$(git ls-files '*.go')

fmt-check: ## fail if a file is not gofmt-clean
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

tidy-check: ## fail if go.mod/go.sum are not tidy (leaves them as they were)
	@tmp=$$(mktemp -d); cp go.mod go.sum $$tmp/; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod $$tmp/go.mod || ! cmp -s go.sum $$tmp/go.sum; then \
		diff -u $$tmp/go.mod go.mod; \
		cp $$tmp/go.mod $$tmp/go.sum .; rm -rf $$tmp; \
		echo "go.mod/go.sum not tidy: run go mod tidy"; exit 1; \
	fi; rm -rf $$tmp

demo: build ## run the whole system locally: etcd, Kafka, 2 coordinators, 3 agents, a live view (Ctrl-C stops)
	$(BIN)/devstack --bin $(BIN) $(DEMO_ARGS)

DURATION ?= 30m
chaos: build ## run the demo with random faults for DURATION, print totals, fail on any loss
	$(BIN)/devstack --bin $(BIN) --view=false --duration $(DURATION) --chaos-every 5s --rotate-every 7s --kafka-port 0 --check $(CHAOS_ARGS)

# The fleet simulator (cmd/fleetsim): the real coordinator pair and an
# embedded etcd with simulated agents. By default one run per fleet of
# SCALE_FLEETS (agents x files per agent), about 10 minutes in all on two
# cores; SCALE_ARGS holding --agents or --files makes it one run of that
# fleet (make scale SCALE_ARGS="--agents 10000 --files 100"); other flags in
# SCALE_ARGS apply to every run.
SCALE_FLEETS ?= 1000x100 10000x10
scale: build ## fleet simulator: cold start, failover, join, lease loss, checkpoints, idle; per-scenario figures (SCALE_FLEETS, SCALE_ARGS)
	@case " $(SCALE_ARGS)" in \
	*" --agents"*|*" --files"*) $(BIN)/fleetsim --bin $(BIN) $(SCALE_ARGS) ;; \
	*) rc=0; for f in $(SCALE_FLEETS); do \
		$(BIN)/fleetsim --bin $(BIN) --agents $${f%x*} --files $${f#*x} $(SCALE_ARGS) || rc=1; \
	done; exit $$rc ;; \
	esac

clean:
	rm -rf $(BIN)
