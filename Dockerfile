# syntax=docker/dockerfile:1
# The operator image: built with the pinned Rust toolchain, shipped on distroless with no shell.

# ---- build ------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependency-caching layer: build every dependency against stub sources, so a source-only change
# reuses this layer instead of recompiling the whole dependency tree. Every target path Cargo.toml
# declares gets a stub, so the manifest loads whatever benches or examples it lists.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src && touch src/lib.rs && echo 'fn main() {}' > src/main.rs \
 && for path in $(sed -n 's/^path *= *"\(.*\.rs\)".*/\1/p' Cargo.toml); do \
      mkdir -p "$(dirname "$path")"; [ -f "$path" ] || echo 'fn main() {}' > "$path"; \
    done \
 && cargo build --release --locked --bin sessionstore-operator \
 && rm -rf src target/release/.fingerprint/sessionstore-operator-* \
           target/release/deps/sessionstore_operator-* target/release/deps/libsessionstore_operator-*

# The real sources. The crate's fingerprints were removed above: COPY keeps the context's mtimes,
# which can be older than the stubs, and cargo must not mistake the stub build for a fresh one.
COPY src ./src
RUN cargo build --release --locked --bin sessionstore-operator \
 && install -D -m 0555 target/release/sessionstore-operator /out/sessionstore-operator

# ---- runtime ----------------------------------------------------------------------------------
# The binary links glibc and libgcc_s dynamically (TLS is rustls + ring, no OpenSSL), so it needs
# distroless/cc rather than distroless/static. `nonroot` runs as 65532 and has no shell.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="sessionstore-operator" \
      org.opencontainers.image.description="Kubernetes operator that gives every application a secure, reliable Redis for its user sessions" \
      org.opencontainers.image.source="https://github.com/sessionstore-dev/sessionstore-operator" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/sessionstore-operator /sessionstore-operator

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/sessionstore-operator"]
CMD ["run"]
