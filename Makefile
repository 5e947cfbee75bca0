# e1000e-vfu: an e1000e NIC served over vfio-user, with live migration.

GO      ?= go
BIN     := bin/e1000e-vfu
SOCKET  ?= /tmp/e1000e-vfu.sock
PKGS    := ./...

.PHONY: all build run test test-unit lint bench fuzz clean deps

all: build

build:
	$(GO) build -o $(BIN) ./cmd/e1000e-vfu

# Serve one NIC on $(SOCKET) until interrupted.
run: build
	$(BIN) serve --socket $(SOCKET)

# Installs what the tests need (root, Debian), then runs every test: the
# unit tests, then real QEMU with a real guest, live migration included,
# then a migration and a guest's traffic again on a loaded machine.
test: deps lint test-unit fuzz test-qemu test-load test-libvirt

deps:
	@sh tests/deps.sh

# The linters beyond vet run from the Go module proxy at a pinned version,
# so neither a developer nor CI installs anything first (the first run
# downloads and builds them; later runs use the build cache). Both see the
# QEMU tests too (-tags integration), whose code they would otherwise
# ignore. deadcode takes the tests as roots (-test): a helper only a test
# calls is in use, and the harness and the *test packages exist for tests.
# It prints what it finds and exits 0, so the output decides.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    := golang.org/x/tools/cmd/deadcode@v0.52.0

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) -tags integration $(PKGS)
	@out=$$($(GO) run $(DEADCODE) -test -tags integration $(PKGS)) || exit 1; \
	if [ -n "$$out" ]; then echo "deadcode: unreachable functions:"; echo "$$out"; exit 1; fi

test-unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 $(PKGS)
	@echo "With real QEMU and a guest (root): make bench-guest (throughput, latency), make bench-migration (downtime, state size) and make bench-takeover (live upgrade pause)."
	@echo "Against abusive clients (no root): make bench-abuse."

# Fuzzing for a bounded number of runs, about a minute and a half in all:
# the NIC behind the real dispatcher longest (it also reaches the register
# and config-space targets' code), then the other targets that take what a
# client, a guest or a stream hands the server. Every target's seed corpus
# already runs in test-unit; these look for new inputs. A failure leaves the
# input in the package's testdata/fuzz/ to commit as a regression.
#
# Budgets are counts of runs (Nx), sized to seconds on a 2-core machine, not
# durations: with a duration, Go 1.26's fuzzing coordinator can report its
# own deadline as "context deadline exceeded", a failure with no input
# (golang/go#75804, fixed in Go 1.27), and a loaded machine makes that likely.
# FUZZSCALE multiplies every budget (FUZZSCALE=10 for a longer search).
FUZZSCALE ?= 1
FUZZ_TARGETS := \
	./e1000e:FuzzDispatchNIC:40000 \
	./vfiouser:FuzzDispatch:30000 \
	./vfiouser:FuzzDMATable:5000 \
	./migration:FuzzLoad:200000 \
	./migration:FuzzAppendCanonical:30000 \
	./migration:FuzzV1Region:50000 \
	./migration:FuzzMachine:30000 \
	./e1000e:FuzzStateLoad:10000 \
	./e1000e:FuzzDatapath:12000 \
	./device/netdev:FuzzStreamDecoder:120000 \
	./handover:FuzzDecodeState:100000

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; runs=$$(( $${rest#*:} * $(FUZZSCALE) )); \
		echo "fuzz: $$pkg $$name for $$runs runs"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $${runs}x -fuzzminimizetime 1000x $$pkg; \
	done

# Abusive vfio-user clients one after the other against one server binary,
# with register round trips, descriptors, threads and RSS measured between
# and during them (tests/benchabuse). No root, no QEMU.
.PHONY: bench-abuse
bench-abuse: build
	$(GO) run ./tests/benchabuse -bin $(BIN)

clean:
	rm -rf bin

# Real QEMU and a real Linux guest (root; see tests/README.md). The cache of
# the prepared Debian 13 root, kernel and initramfs lives in
# $(E1000E_VFU_CACHE), default /var/cache/e1000e-vfu.
.PHONY: prepare test-qemu demo bench-guest

prepare:
	@sh tests/prepare.sh >/dev/null

# One package at a time: each boots guests under TCG on the 2 cores.
test-qemu: deps prepare qemu-mig build
	$(GO) test -tags integration -count=1 -p 1 -timeout 60m -v ./tests/integration/... ./tests/migration/...

demo: deps prepare qemu-mig build
	$(GO) run ./tests/demo

bench-guest: deps prepare build
	$(GO) run ./tests/benchguest

# Live migration between two QEMUs with a running guest (root; see
# tests/migration/README.md). qemu-mig builds, once and cached, the QEMU
# with vfio-user migration (tests/qemu-migration/).
.PHONY: qemu-mig test-migration test-load bench-migration bench-takeover

qemu-mig:
	@sh tests/qemu-migration/build.sh

test-migration: deps prepare qemu-mig build
	$(GO) test -tags integration -count=1 -timeout 30m -v -run '^TestMigrate' ./tests/migration/...

# Load mode: CPU hogs compete with QEMU and the servers for every core
# (tests/migration/README.md).
LOAD ?= 3
test-load: deps prepare qemu-mig build
	E1000E_VFU_LOAD=$(LOAD) $(GO) test -tags integration -count=1 -timeout 30m -v -run '^TestMigrateTraffic$$' ./tests/migration/...
	E1000E_VFU_LOAD=$(LOAD) $(GO) test -tags integration -count=1 -timeout 30m -v -run '^TestVFUTCP$$' ./tests/integration/...

bench-migration: deps prepare qemu-mig build
	$(GO) test -tags integration -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkMigration' -benchtime 1x -v ./tests/migration/...

# libvirt: two libvirtd "hosts" (Debian 13's libvirt 12.x in a cached root,
# tests/libvirt/prepare.sh) migrate a guest with virsh migrate --live
# through the hook of contrib/libvirt (root; see tests/libvirt/README.md).
.PHONY: test-libvirt
test-libvirt: deps prepare qemu-mig build
	$(GO) test -tags integration -count=1 -timeout 30m -v ./tests/libvirt/...

# A live upgrade (serve --takeover) ten times under a guest on stock QEMU,
# beside ten live migrations of QEMU's built-in e1000e in the same run:
# the guest-visible pause (longest UDP echo gap) and the handover time in
# the servers, as medians (tests/migration/takeover_bench_test.go).
bench-takeover: deps prepare qemu-mig build
	$(GO) test -tags integration -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkTakeover$$' -benchtime 1x -v ./tests/migration/...
