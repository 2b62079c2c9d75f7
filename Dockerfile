# `sluice serve` in a container: a multi-stage build, run as a non-root user.
#
#   docker build -t sluice .
#   docker compose --profile serve up -d     # with docker-compose.yml's services
#
# Not built on the project's machines (they have no Docker engine): see the note in
# docs/operations.md.

# --- build ----------------------------------------------------------------------------
FROM rust:1.85-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys: a C toolchain (in the image), perl, zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends perl zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p sluice \
 && install -m 755 target/release/sluice /usr/local/bin/sluice

# --- run ------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /srv/sluice --create-home sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER sluice:sluice
# The working directory holds what relative paths in pipelines point at (`.sluice/`,
# SQLite files): mount a volume here; the pipelines go in /srv/sluice/pipelines.
WORKDIR /srv/sluice
EXPOSE 7878
# tini forwards SIGTERM to sluice, which stops gracefully (runs in flight finish).
ENTRYPOINT ["/usr/bin/tini", "--", "sluice"]
# Beyond loopback the API needs a token: mount it as a secret.
CMD ["serve", "/srv/sluice/pipelines", "--listen", "0.0.0.0:7878", "--token-file", "/run/secrets/sluice_api_token"]
