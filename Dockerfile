# syntax=docker/dockerfile:1
# One image, two binaries: callfleet-operator (the entrypoint) and callfleet-worker.
# Build:  docker build -t callfleet:dev .
# CallCluster worker pods run `callfleet-worker` from this same image (the operator sets the
# container command), so operator and workers always come from one build.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit caches keep the registry and the target folder between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p callfleet-operator -p callfleet-worker \
 && install -D -m 0755 target/release/callfleet-operator /out/callfleet-operator \
 && install -D -m 0755 target/release/callfleet-worker /out/callfleet-worker \
 && install -D -m 0755 target/release/callfleet-call /out/callfleet-call

# distroless/cc: glibc, libgcc and CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The distroless "nonroot" user.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/callfleet-operator"]
