# tfwatch in a small runtime image (docs/prometheus.md runs it as a DaemonSet).
#
#   docker build -t tfwatch .
#   docker run --rm --pid=host --cap-add SYS_PTRACE tfwatch node --json --duration 10s
#
# Stage 1 builds the release binary with its default features: NVML is loaded at run
# time (no CUDA is needed to build), native stacks link Debian's libdw.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libdw-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && mkdir tests && touch tests/main.rs \
 && for b in sampler locks tui rules snapshot tree; do echo "fn main() {}" > benches/$b.rs; done \
 && cargo fetch --locked
COPY src src
COPY rules rules
COPY benches benches
RUN cargo build --release --locked --bin tfwatch \
 && strip target/release/tfwatch

# Stage 2: what the binary links (ldd: libdw, libelf, zlib, liblzma, libbz2, libgcc_s,
# libc) and nothing else; procps for the shell loops of the older recipes.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libdw1 procps \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tfwatch /usr/local/bin/tfwatch
ENTRYPOINT ["/usr/local/bin/tfwatch"]
CMD ["node", "--json"]
