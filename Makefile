# Build, run and test the Go pmxcfs. Every target installs the Debian packages it needs first,
# so a fresh Debian 12 machine (as root) needs nothing but this repository and Go.

GO      ?= go
BIN     := bin
RUNDIR  := $(CURDIR)/run
NODE    ?= $(shell hostname -s)
# Upstream refuses a node name that resolves only to loopback; development machines often
# have exactly that, so `make run` names an address explicitly.
NODE_IP ?= $(or $(shell hostname -I 2>/dev/null | awk '{print $$1}'),192.0.2.1)

DEB_PACKAGES := gcc pkg-config sqlite3 libsqlite3-dev fuse3 corosync libcorosync-common-dev \
	libcpg-dev libquorum-dev libcmap-dev libqb-dev librrd-dev rrdtool rrdcached \
	iproute2 util-linux

.PHONY: all deps test-deps build run test bench vet staticcheck race clean

all: build

# apt_install installs those of the given Debian packages that are missing.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call apt_install,$(DEB_PACKAGES))
	@getent group www-data >/dev/null || groupadd --system --gid 33 www-data

# The pvecm cluster test runs an sshd in every bench node.
TEST_PACKAGES := openssh-server openssh-client

test-deps:
	$(call apt_install,$(TEST_PACKAGES))

build: deps
	$(GO) build -o $(BIN)/pmxcfs ./cmd/pmxcfs
	$(GO) build -o $(BIN)/create_pmxcfs_db ./cmd/create_pmxcfs_db
	$(GO) build -o $(BIN)/pmxcfs-db ./cmd/pmxcfs-db
	$(GO) build -o $(BIN)/pvecm ./cmd/pvecm

# Local mode on a database under ./run, seeded from examples/default-etc-pve on first start,
# mounted at ./run/pve. Ctrl-C stops it and unmounts.
run: build
	@mkdir -p $(RUNDIR)/lib $(RUNDIR)/pve
	@[ -f $(RUNDIR)/lib/config.db ] || $(BIN)/create_pmxcfs_db examples/default-etc-pve $(RUNDIR)/lib/config.db
	@echo "pmxcfs: local mode, /etc/pve at $(RUNDIR)/pve, database $(RUNDIR)/lib/config.db"
	$(BIN)/pmxcfs -f -l --mount $(RUNDIR)/pve --db $(RUNDIR)/lib/config.db \
		--run-dir $(RUNDIR)/run --nodename $(NODE) --node-ip $(NODE_IP)

vet:
	$(GO) vet ./...

# staticcheck, pinned, installed from the Go module proxy into build/tools (2026.2.2, the
# release for Go 1.26). Its checks are the defaults; cmd/pmxcfs and cmd/pvecm have a
# staticcheck.conf that silences only the error-string style check, for upstream's messages.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CURDIR)/build/tools/staticcheck-$(STATICCHECK_VERSION)

$(STATICCHECK):
	GOBIN=$(CURDIR)/build/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(CURDIR)/build/tools/staticcheck $@

staticcheck: deps $(STATICCHECK)
	$(STATICCHECK) ./...

# The race detector over every package but tests/: the bench tests there drive the daemon
# binary from `make build` (not built with -race) and are the slowest.
RACE_PKGS = $(shell $(GO) list ./... | grep -v '/pmxcfs/tests')

race: deps
	$(GO) test -race -count=1 -timeout 30m $(RACE_PKGS)

test: build vet staticcheck race test-deps deb-check
	$(GO) test -count=1 -timeout 60m ./...

# Figures only, nothing asserted. With PMXCFS_UPSTREAM_BIN=/path/to/upstream/pmxcfs the same
# workloads also run on upstream's daemon in the same run and the table shows both side by side;
# BENCH_ARGS passes options to tests/fsbench, e.g. BENCH_ARGS="-pairs 5 -only cluster" or "-quick".
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./memdb/ ./dfsm/ 2>/dev/null | grep -E '^(Benchmark|ok|---)' || true
	$(GO) run ./tests/fsbench -bin $(BIN)/pmxcfs $(BENCH_ARGS)

clean:
	rm -rf $(BIN) build

# The fault suite at length (issue 12): the bench fault tests (tests/fault_test.go; their short
# version runs in `make test`) with many kill rounds and partition cycles, mixed with upstream
# too when PMXCFS_UPSTREAM_BIN is set, node logs kept in SOAK_LOGS; then every fuzz target for
# FUZZTIME. A fuzz crasher stays in its package's testdata/fuzz/, so plain `go test` runs it as
# a regression test from then on (commit it with the fix).
SOAK_ROUNDS ?= 30
SOAK_CYCLES ?= 30
SOAK_LOGS   ?= $(CURDIR)/build/soak-logs
FUZZTIME    ?= 2m

.PHONY: soak soak-faults soak-fuzz

soak:
	@status=0; $(MAKE) soak-faults || status=1; $(MAKE) soak-fuzz || status=1; exit $$status

soak-faults: build
	PMXCFS_FAULT_ROUNDS=$(SOAK_ROUNDS) PMXCFS_FAULT_CYCLES=$(SOAK_CYCLES) PMXCFS_FAULT_LOGS=$(SOAK_LOGS) \
		$(GO) test -count=1 -v -timeout 6h -run '^TestFault' ./tests/

soak-fuzz: deps
	@failed=; \
	for target in $$(grep -rlE --include='*_test.go' --exclude-dir=build --exclude-dir=.git '^func Fuzz' . | sort | while read -r f; do \
			sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$$f" | sed "s|^|$$(dirname "$$f"):|"; done); do \
		dir=$${target%%:*}; fn=$${target##*:}; \
		echo "== $$fn in $$dir for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) "$$dir" || failed="$$failed $$dir:$$fn"; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz targets that failed:$$failed; their inputs (git status):"; \
		git status --short -- '*testdata/fuzz*'; exit 1; \
	fi

# Debian packages: `make deb` writes pmxcfs-go and pvecm-go (.deb, .changes, .buildinfo) to
# build/deb/; `make deb-check` builds them and checks their contents, lintian, the unit and
# their installation into a throw-away Debian 12 root (debian/tests/check-deb).
DEB_OUT := $(CURDIR)/build/deb
DEB_TOOLS := build-essential debhelper dpkg-dev fakeroot lintian debootstrap systemd

.PHONY: deb deb-deps deb-check

deb-deps:
	$(call apt_install,$(DEB_TOOLS))

# debhelper gives the build its own HOME, so the Go caches are named explicitly; with them the
# package build reuses the modules downloaded here.
deb: deps deb-deps
	$(GO) mod download
	GO="$$(command -v $(GO))" GOCACHE="$$($(GO) env GOCACHE)" GOMODCACHE="$$($(GO) env GOMODCACHE)" \
		GOPATH="$$($(GO) env GOPATH)" GOFLAGS="$$($(GO) env GOFLAGS)" debian/build-deb $(DEB_OUT)

deb-check: deb
	debian/tests/check-deb $(DEB_OUT)
