# idend: see README.md.
GO ?= go
CLANG ?= clang-19
STRIP ?= llvm-strip-19
BPF_CFLAGS := -O2 -g -Wall -Werror -I$(CURDIR)/bpf

export BPF2GO_CC := $(CLANG)
export BPF2GO_STRIP := $(STRIP)
export BPF2GO_CFLAGS := $(BPF_CFLAGS)

.PHONY: build generate test test-unit test-priv demo bench test-vm lint check-generate clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/idend ./cmd/idend

generate:
	$(GO) generate ./internal/loader/...
	scripts/genproto.sh

# Fails when the committed BPF objects, bindings or protobuf code differ
# from a fresh build.
check-generate: generate
	git diff --exit-code -- internal/ || (echo "generated files are stale: run make generate" >&2; exit 1)

# The real-SPIRE test needs SPIRE's binaries, built once from source.
test: build
	$(GO) vet ./...
	test/spire/build.sh
	IDEND_SPIRE_BIN=$(CURDIR)/test/spire/bin $(GO) test -count=1 -p 1 ./...

bench: build
	scripts/bench.sh

demo: build
	scripts/demo.sh

test-vm:
	test/vm/run.sh

clean:
	rm -rf bin
