# Gozen: Go programs as Xen PVH guests.
#   make run [APP=hello]   set up the rig and boot the app as a domU, streaming its console
#   make test              host tests, then guest tier A (PVH dom0) and tier B (xl create'd domU)
#   make bench             host benchmarks and guest benchmarks
#   make soak [SOAK=30m]   the tier-B inter-domain stress for SOAK (not part of make test)
#   make conformance       only the tier-B conformance suites (two Gozen domUs)
#   make compiler          build the TamaGo compiler if it is missing (every target
#                          that needs it does this first)
#   make APP=x             build build/x.elf (trimmed of Go's FIPS entropy buffer,
#                          see README, Footprint; GOZEN_TRIM=0 keeps it; with the
#                          runtime's break recorded for the zero-page release)
#   make image APP=x       build build/image/x/: the ELF, x.xl.in (xl) and x.xml.in (libvirt)
#   make clean

APP      ?= hello
GO       ?= go
TAMAGO   := $(shell $(GO) tool -n github.com/usbarmory/tamago/cmd/tamago 2>/dev/null)
TG_ROOT  := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tamago-go/tamago-go1.26.0
TG_GO    := $(TG_ROOT)/bin/go
TAGS     := linkcpuinit,linkramstart
LDFLAGS  := -T 0x110000 -R 0x1000
PKG      ?= ./apps/$(APP)
OUT      ?= build/$(notdir $(PKG)).elf

.PHONY: all elf image run test test-host test-guest bench soak conformance clean setup setup-if-guest compiler compiler-or-skip check-compiler vet vet-host vet-guest

all: elf

# The TamaGo compiler. Where it is missing, `go tool tamago` builds it (the
# tool line in go.mod: it clones tamago-go1.26.0 from GitHub into $(TG_ROOT)
# and runs its make.bash, printing its progress). Where that fails, one
# message says what to do: `compiler` then stops make, `compiler-or-skip`
# goes on (make test: host tests run, guest tests skip loudly; with
# GOZEN_GUEST=0 or BUILD_COMPILER=0 it does not try).
define build_compiler
if [ -x "$(TG_GO)" ]; then exit 0; fi; \
fail() { \
	echo "make: ################################################################"; \
	echo "make: no TamaGo compiler: $$1."; \
	echo "make: It is built once into $(TG_ROOT) by 'go tool tamago'"; \
	echo "make: (git clone https://github.com/usbarmory/tamago-go tag tamago-go1.26.0, then"; \
	echo "make: src/make.bash, which needs a Go toolchain on PATH). Where GitHub is reachable,"; \
	echo "make: run make again; elsewhere, put a tamago-go1.26.0 tree built on another machine"; \
	echo "make: there (its bin/go must exist). See README, 'The TamaGo compiler'."; \
	echo "make: ################################################################"; \
	exit 1; }; \
if [ -z "$(TAMAGO)" ]; then fail "'go tool -n github.com/usbarmory/tamago/cmd/tamago' failed (is the tamago module in the module cache, or the Go module proxy reachable?)"; fi; \
if [ -n "$$(ls -A "$(TG_ROOT)" 2>/dev/null)" ]; then fail "$(TG_ROOT) exists but has no bin/go (an earlier build stopped): remove that folder and run make again"; fi; \
echo "make: the TamaGo compiler is missing: building tamago-go1.26.0 into $(TG_ROOT) with go tool tamago (a clone from GitHub, then make.bash: a few minutes)"; \
env -u GOOS -u GOARCH -u GOOSPKG "$(TAMAGO)" version || fail "'go tool tamago' could not build it (its output is above)"; \
test -x "$(TG_GO)" || fail "'go tool tamago' ran but $(TG_GO) is not there"; \
echo "make: TamaGo compiler ready: $$("$(TG_GO)" version)"
endef

compiler:
	@$(build_compiler)

BUILD_COMPILER ?= 1
compiler-or-skip:
	@if [ "$$GOZEN_GUEST" != 0 ] && [ "$(BUILD_COMPILER)" != 0 ]; then ( $(build_compiler) ) || true; fi

# the old name of compiler
check-compiler: compiler

elf: compiler
	@mkdir -p $(dir $(OUT))
	GOOS=tamago GOARCH=amd64 GOOSPKG=github.com/usbarmory/tamago GOTOOLCHAIN=local \
		$(TAMAGO) build -tags $(TAGS) -trimpath -ldflags "$(LDFLAGS)" -o $(OUT) $(PKG)
	@$(GO) run ./cmd/gozen-image symbols $(OUT)
ifneq ($(GOZEN_TRIM),0)
	@$(GO) run ./cmd/gozen-image trim $(OUT)
endif

# an appliance image: the ELF with an xl config template and a libvirt
# domain XML (xenpvh) generated from apps/$(APP)/gozen.json (see README, Images)
image: elf
	$(GO) run ./cmd/gozen-image build -app $(PKG) -elf $(OUT) -out build/image/$(notdir $(PKG))

setup:
	@qemu/setup.sh >/dev/null

# apps/httpd gets a vif and 127.0.0.1:8080 forwarded to its port 80
RUNFLAGS ?= $(if $(filter httpd,$(APP)),-forward 8080:80 -memory 64 -timeout 30m)
run: setup elf
	$(GO) run ./cmd/gozen-run -elf $(OUT) -name $(APP) $(if $(wildcard apps/$(APP)/gozen.json),-manifest apps/$(APP)/gozen.json) $(RUNFLAGS)

GOTESTFLAGS ?=

test: setup-if-guest vet
	$(GO) test -count=1 -timeout 56m $(GOTESTFLAGS) ./...

# the rig is set up only where guest tests can run: GOZEN_GUEST is not 0 and
# the TamaGo compiler is present; otherwise say which of the two is why not
setup-if-guest: compiler-or-skip
	@if [ "$$GOZEN_GUEST" = 0 ]; then \
		echo "make: ######## SKIP guest tiers: GOZEN_GUEST=0 ########"; \
	elif [ ! -x "$(TG_GO)" ]; then \
		echo "make: ######## SKIP guest tiers: TamaGo compiler missing at $(TG_GO) (see README) ########"; \
	else qemu/setup.sh >/dev/null; fi

# go vet for the host, and for the guest (GOOS=tamago, with the TamaGo
# compiler's go command, so that the _tamago.go files are vetted too).
# Host-only code that cannot build for the guest (gnttab/gntunix, which mmaps
# files, cmd/vchancat and the tests using them) says so with
# //go:build !tamago, so ./... covers every other package.
vet: vet-host vet-guest

vet-host:
	$(GO) vet ./...

vet-guest: compiler-or-skip
	@if [ ! -x "$(TG_GO)" ]; then \
		echo "make: ######## SKIP guest vet (GOOS=tamago): TamaGo compiler missing at $(TG_GO) (see README) ########"; \
	else echo "GOOS=tamago go vet ./..."; \
		GOOS=tamago GOARCH=amd64 GOOSPKG=github.com/usbarmory/tamago GOTOOLCHAIN=local \
		$(TG_GO) vet -tags $(TAGS) ./...; fi

test-host:
	GOZEN_GUEST=0 $(GO) test -count=1 ./...

test-guest: setup compiler
	$(GO) test -count=1 -timeout 50m -v -run 'Tier' ./qemu/

bench: setup-if-guest
	$(GO) test -run '^$$' -bench . ./evtchn/... ./gnttab/... ./drivers/... ./xenbus/... ./netstack/... ./network/... ./blockfs/...
	$(GO) test -timeout 50m -run '^$$' -bench . -benchtime 1x ./qemu/

# only the tier-B conformance suites (make test runs them too)
conformance: setup compiler
	$(GO) test -count=1 -timeout 20m -v -run '^TestTierBConformance$$' ./qemu/

# the inter-domain stress (vchan and V4V pairs, event stress) for SOAK,
# reporting faults, throughput and leftovers
SOAK ?= 30m
soak: setup compiler
	GOZEN_STRESS=$(SOAK) $(GO) test -count=1 -timeout 0 -v -run '^TestTierBStress$$' ./qemu/

clean:
	rm -rf build
