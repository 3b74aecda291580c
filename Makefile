# sslsniff: `make run` starts the tracer, `make test` runs every test. Both install what
# they need first (Debian packages, rustfmt and clippy) and build.

CARGO ?= cargo
ARGS ?=
# Tracing needs root: when not root, the tracer and the tests run under sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -E)

BUILD_DEPS := clang llvm libelf-dev zlib1g-dev pkg-config make libssl-dev
TEST_DEPS := openssl curl python3 gnutls-bin libnss3-tools util-linux gcc binutils time \
	android-libboringssl-dev libwolfssl-dev libmbedtls-dev tshark nodejs golang-go \
	qemu-system-x86 busybox-static cpio bpftool

.PHONY: all build deps run test test-kernels test-fallbacks fuzz bench lint clean

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
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

RUNNER := $(if $(SUDO),CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(SUDO)")
# The kernel features sslsniff can do without (see `sslsniff -d`).
FALLBACKS := task-storage cookies bpf-loop uprobe-multi syscall-tracepoint

# End-to-end tests share the machine's TLS libraries and probes: run them one at a time.
# Release build: the tests measure a tracer that must keep up with busy programs. Then
# the end-to-end suite again with every fallback forced, as on the oldest kernel of the
# matrix (the matrix itself runs in the first pass).
test: lint
	$(RUNNER) $(CARGO) test --workspace --release -- --test-threads=1
	SSLSNIFF_WITHOUT=all $(RUNNER) $(CARGO) test --release --tests -- --test-threads=1 --skip debian_

# The end-to-end suite once for each fallback alone (longer than `make test`).
test-fallbacks: deps
	for f in $(FALLBACKS); do \
		SSLSNIFF_WITHOUT=$$f $(RUNNER) $(CARGO) test --release --tests -- --test-threads=1 --skip debian_ || exit 1; \
	done

# The kernel matrix alone (part of `make test`): Debian's 5.10, 6.1 and 6.12 under qemu.
test-kernels: deps
	$(RUNNER) $(CARGO) test --release --test kernels -- --test-threads=1 --nocapture

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
	$(CARGO) build --release -p sslsniff-bench
	$(SUDO) env TMPDIR=/dev/shm target/release/sslsniff-bench --sslsniff target/release/sslsniff $(ARGS)

clean:
	$(CARGO) clean
