# syntax=docker/dockerfile:1
#
# Images for stevedore, built from source. Needs access to Docker Hub (rust, debian).
#
#   docker build --target worker -t stevedore-worker:dev .
#   docker build --target cli -t stevedore-cli:dev .
#   docker compose up --scale worker=3        (builds it too; see docker-compose.yml)
#
# Without a registry, deploy/build-local-images.sh builds the same worker image from a
# binary built on the host.

# ---- build: compile in the official Rust image ------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Caches keep the registry and target/ between builds; the binaries are copied out of the
# cached target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --example worker \
 && cargo build --release --locked -p stevedore-cli \
 && install -D target/release/examples/worker /out/stevedore-worker \
 && install -D target/release/stevedore /out/stevedore

# ---- runtime: what every image shares ----------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin stevedore
ENV RUST_LOG=info
USER 10001
WORKDIR /tmp

# ---- worker: the example worker with the demo job types ---------------------------------
# Flags: --redis-url (or REDIS_URL), --queues, --concurrency, --prefix, --lease,
# --max-deliveries, --drain-timeout; `--help` lists them. Stops gracefully on SIGTERM.
FROM runtime AS worker
COPY --from=build /out/stevedore-worker /usr/local/bin/stevedore-worker
# Prometheus metrics (--metrics-addr 0.0.0.0:9464).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/stevedore-worker"]

# ---- cli: `stevedore` commands and `stevedore serve` (admin API and dashboard) ----------
#   docker build --target cli -t stevedore-cli:dev .
#   docker run --rm stevedore-cli:dev --redis-url redis://host:6379 queues
FROM runtime AS cli
COPY --from=build /out/stevedore /usr/local/bin/stevedore
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stevedore"]
