# cookiegate in a container: the Debian package (see packaging/ and `[package.metadata.deb]` in
# Cargo.toml) built with `cargo deb`, installed with dpkg on debian:bookworm-slim, run as a
# non-root user.
#
#   docker build -t cookiegate .
#   docker run --rm -p 4000:4000 \
#     -v "$PWD/cookiegate.toml:/etc/cookiegate/cookiegate.toml:ro" --env-file cookiegate.env \
#     cookiegate
#
# Not built in CI here: CI's machines have no Docker engine and cannot pull base images. The
# package it installs is the one packaging/deb-test.sh builds, installs with dpkg -i and proxies
# a request through, in CI.

# Build stage: Debian bookworm as well, so the binary needs no newer glibc than the slim stage has.
FROM rust:1-bookworm AS build
ARG CARGO_DEB_VERSION=3.8.0
RUN cargo install cargo-deb --version "${CARGO_DEB_VERSION}" --locked
WORKDIR /src
COPY . .
RUN cargo deb --locked && cp target/debian/cookiegate_*.deb /cookiegate.deb

FROM debian:bookworm-slim
# ca-certificates: https upstreams and IdPs (rustls loads the platform's roots). The package's
# only dependency, libc6, is in the base image; its systemd unit is installed but unused here.
COPY --from=build /cookiegate.deb /tmp/cookiegate.deb
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && dpkg -i /tmp/cookiegate.deb \
    && rm -rf /tmp/cookiegate.deb /var/lib/apt/lists/* \
    && groupadd --gid 10001 cookiegate \
    && useradd --uid 10001 --gid cookiegate --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin cookiegate
# A numeric user, so orchestrators that require a non-root user can check it without /etc/passwd.
USER 10001:10001
EXPOSE 4000
# SIGTERM drains in-flight requests for `[server] shutdown_grace` (30 s by default): give it that
# long (`docker stop -t 35`, or stop_grace_period in compose) before a SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/cookiegate"]
# The packaged config listens on 127.0.0.1:4000, which nothing outside the container can reach:
# listen on all of the container's addresses instead (`--listen` overrides the file's `listen`).
# Mount your own config over /etc/cookiegate/cookiegate.toml; secrets come as environment
# variables (--env-file), never in the file.
CMD ["--config", "/etc/cookiegate/cookiegate.toml", "--listen", "0.0.0.0:4000"]
