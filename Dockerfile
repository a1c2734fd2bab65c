# syntax=docker/dockerfile:1
#
# Switchboard container image.
#
#   docker build -t switchboard:dev .
#   docker run --rm -p 3000:3000 switchboard:dev
#
# Build stage: the whole workspace is copied (every member's manifest is needed to resolve the
# workspace), but only the `switchboard` binary is built. BuildKit cache mounts keep the crate
# registry and target dir between builds; the binary is copied out of the cached target dir in
# the same RUN because cache mounts are not part of the image.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# The slim image already has gcc and libc6-dev (ring and the bundled SQLite are C code);
# jemalloc's build (tikv-jemalloc-sys) needs make; pkg-config is cheap insurance for -sys crates
# that probe for system libraries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard --bin switchboard \
 && install -D -m 0755 target/release/switchboard /out/switchboard

# Runtime stage: glibc (the binary is linked against bookworm's), CA roots for rediss:// and
# TLS to PostgreSQL, nothing else. `sleep` (coreutils) is used by the Kubernetes preStop hook.
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/switchboard --shell /usr/sbin/nologin switchboard \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/switchboard
COPY --from=builder /out/switchboard /usr/local/bin/switchboard

# The embedded default database is `sqlite://switchboard.db?mode=rwc`, relative to the working
# directory: keep it in the writable data dir (an emptyDir in Kubernetes, where the root
# filesystem is read-only). Cluster deployments point SWITCHBOARD_DATABASE_URL at PostgreSQL.
WORKDIR /var/lib/switchboard
USER 10001:10001

ENV SWITCHBOARD_LISTEN=0.0.0.0:3000
EXPOSE 3000
# The node drains on SIGTERM (readiness 503 -> server:maintenance -> server:shutdown -> close
# frames 1001 -> exit 0 within SWITCHBOARD_DRAIN_SECS). It handles the signal itself, so it can
# run as PID 1 without an init shim.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchboard"]
