# One image, two binaries: callfleet-operator and callfleet-worker.
# Build:  docker build -t callfleet:dev .
# The chart and the operator pick the binary with the container command.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits don't rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY crds/Cargo.toml crds/
COPY operator/Cargo.toml operator/
COPY worker/Cargo.toml worker/
COPY tests/Cargo.toml tests/
RUN for c in crds operator worker tests; do mkdir -p $c/src && echo 'fn main() {}' > $c/src/main.rs && touch $c/src/lib.rs; done \
 && cargo fetch --locked
COPY . .
RUN cargo build --release --locked -p callfleet-operator -p callfleet-worker \
 && install -D -m 0755 target/release/callfleet-operator /out/callfleet-operator \
 && install -D -m 0755 target/release/callfleet-worker /out/callfleet-worker

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/callfleet-operator"]
