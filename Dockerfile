# syntax=docker/dockerfile:1
# alb's image: the binary, its config and the C runtime it links, running as a non-root user.
#
# With a registry (BuildKit, the default builder): `docker build -t alb .` compiles from source in
# BUILD_IMAGE and puts the binary on RUNTIME_IMAGE (distroless: libc, libgcc, CA certificates, a
# `nonroot` user, no shell).
#
# Without one: `deploy/docker/build-image.sh` builds the binary on the host, assembles a runtime
# base from the libraries it links, and builds the `prebuilt` target from a small context holding
# `dist/alb`. Both targets end in the same `runtime` stage settings.
ARG BUILD_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUNTIME_IMAGE} AS runtime
COPY deploy/alb.compose.toml /etc/alb/alb.toml
USER nonroot:nonroot
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/alb"]
CMD ["run", "--config", "/etc/alb/alb.toml"]

# The binary built outside Docker (first in the file: the classic builder stops at its target).
FROM runtime AS prebuilt
COPY dist/alb /usr/local/bin/alb

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked && strip target/release/alb

FROM runtime AS release
COPY --from=build /src/target/release/alb /usr/local/bin/alb
