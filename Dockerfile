# syntax=docker/dockerfile:1
#
# linkr: multi-stage build.
#   docker build --build-arg VERSION=0.1.0 --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t linkr .

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace is needed: Cargo resolves every member's manifest even for `-p linkr`.
COPY . .
# Registry and target dir live in BuildKit cache mounts, so the binary is copied out of the
# cache before the step ends. The toolchain image brings gcc/g++ for mimalloc's and the
# demangler's C/C++ sources.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p linkr \
    && install -D -m 0755 target/release/linkr /out/linkr
# The data dir must exist and belong to the runtime user: the runtime image has no shell to
# create it, and an empty named volume copies the ownership of the image's directory.
RUN install -d -o 65532 -g 65532 -m 0750 /out/data

# Runtime: distroless "cc" rather than "static". linkr is a dynamically linked glibc executable
# (Rust std, mimalloc's C code and pprof's C++ demangler link against glibc, libgcc_s and
# libstdc++); distroless/cc ships exactly those libraries plus CA certificates and tzdata, with
# no shell and no package manager. "static" would need a fully static (musl) build instead.
# The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=dev
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="linkr" \
      org.opencontainers.image.description="A production URL shortener on an embedded store" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}"

COPY --from=builder /out/linkr /usr/local/bin/linkr
COPY --from=builder --chown=65532:65532 /out/data /data

# In a container both listeners bind all interfaces; publish the admin port to trusted
# networks only (compose binds it to host loopback, Kubernetes gives it its own Service).
ENV LINKR_ADDR=0.0.0.0:8080 \
    LINKR_ADMIN_ADDR=0.0.0.0:9090 \
    LINKR_DATA_DIR=/data \
    LINKR_LOG_FORMAT=json
EXPOSE 8080 9090
VOLUME ["/data"]

# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# No HEALTHCHECK: the image has no shell or curl to run one. Orchestrators probe over HTTP
# (Kubernetes httpGet on /healthz, /readyz, /startupz); see compose.yaml for compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/linkr"]
