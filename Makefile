# sslsniff: `make run` starts the tracer, `make test` runs every test. Both install what
# they need first (Debian packages, rustfmt and clippy) and build.

CARGO ?= cargo
ARGS ?=
# Tracing needs root: when not root, the tracer and the tests run under sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -E)

BUILD_DEPS := clang llvm libelf-dev zlib1g-dev pkg-config make libssl-dev
TEST_DEPS := openssl curl python3 gnutls-bin libnss3-tools util-linux gcc binutils time \
	android-libboringssl-dev libwolfssl-dev libmbedtls-dev tshark nodejs golang-go

.PHONY: all build deps run test fuzz bench lint clean

all: build

deps:
	@missing=$$(for p in $(BUILD_DEPS) $(TEST_DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy

build: deps
	$(CARGO) build --release

run: build
	$(SUDO) target/release/sslsniff $(ARGS)

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# End-to-end tests share the machine's TLS libraries and probes: run them one at a time.
# Release build: the tests measure a tracer that must keep up with busy programs.
test: lint
	$(if $(SUDO),CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(SUDO)") $(CARGO) test --release -- --test-threads=1

# The fuzzers of hostile input (unit tests named fuzz_*) run 2.5 s each in `make test`; here
# as long as asked: SECONDS per target, or ITERATIONS inputs per target; SEED for other
# inputs. A failure names its input: SSLSNIFF_FUZZ_INPUT=N runs that one again.
SECONDS ?= 60
ITERATIONS ?=
SEED ?=
fuzz: deps
	SSLSNIFF_FUZZ_SECONDS=$(SECONDS) SSLSNIFF_FUZZ_ITERATIONS=$(ITERATIONS) SSLSNIFF_FUZZ_SEED=$(SEED) \
		$(CARGO) test --release fuzz_ -- --test-threads=1 --nocapture

# Temporary files of the bench and of the tools it runs (go build) go to /dev/shm, memory
# rather than this machine's disk, whose speed would otherwise be part of what is measured.
bench: build
	$(CARGO) build --release --manifest-path bench/Cargo.toml
	$(SUDO) env TMPDIR=/dev/shm bench/target/release/sslsniff-bench --sslsniff target/release/sslsniff $(ARGS)

clean:
	$(CARGO) clean
