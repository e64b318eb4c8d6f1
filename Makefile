# knit — see README.md. Targets: build, test, bench, demo, install, clean.
CARGO ?= cargo
PREFIX ?= /usr/local
CNI_BIN_DIR ?= /opt/cni/bin
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
# Every plugin is one multi-call binary (knit-cni) linked under the reference names it answers
# to (`knit-cni --list`).

.PHONY: all build deps test test-unit test-kernel test-netns lint bench demo demo-podman install clean fuzz

all: build

build:
	$(CARGO) build --release --workspace --bins
	rm -rf target/cni/bin && mkdir -p target/cni/bin
	for p in $$(target/release/knit-cni --list); do ln -f target/release/knit-cni target/cni/bin/$$p; done

deps:
	scripts/deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-unit:
	$(CARGO) test --workspace

# The release suites (kernel tests, then the netns integration tests, which run the shipped
# binaries of `build`): one cargo selection compiles both (scripts/release-tests.sh), so the
# tree is built once for them rather than once per suite.
test-kernel:
	scripts/require-root.sh
	CARGO=$(CARGO) scripts/release-tests.sh build
	scripts/release-tests.sh run kernel

test-netns:
	scripts/require-root.sh
	CARGO=$(CARGO) scripts/release-tests.sh build
	$(MAKE) build
	scripts/release-tests.sh run netns

test: deps lint test-unit
	scripts/require-root.sh
	CARGO=$(CARGO) scripts/release-tests.sh build
	$(MAKE) build
	scripts/release-tests.sh run kernel netns

bench: deps build
	scripts/require-root.sh
	$(CARGO) run --release -p netns-tests --bin knit-bench

# The DNS request path under random packets, for KNIT_FUZZ_SECS seconds (default 600);
# `make test` runs one short round of the same properties.
fuzz:
	scripts/fuzz.sh

# The main job (DESIGN.md): a cluster of three host namespaces with etcd, two controllers and
# an agent each; then knit alone on one host (sandboxes, services, names).
demo: deps build
	scripts/require-root.sh
	scripts/demo-cluster.sh
	scripts/demo-cli.sh

# podman (CNI backend) driving knit's plugins.
demo-podman: deps build
	scripts/require-root.sh
	scripts/demo.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(CNI_BIN_DIR)
	install -m 0755 target/release/knit $(DESTDIR)$(PREFIX)/bin/knit
	install -m 0755 target/release/knit-cni $(DESTDIR)$(CNI_BIN_DIR)/knit-cni
	for p in $$(target/release/knit-cni --list); do ln -f $(DESTDIR)$(CNI_BIN_DIR)/knit-cni $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	install -d $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|g' contrib/systemd/knit-agent.service.in > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/knit-agent.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/knit-agent.service
	sed 's|@BINDIR@|$(PREFIX)/bin|g' contrib/systemd/knit-controller.service.in > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/knit-controller.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/knit-controller.service

clean:
	$(CARGO) clean
