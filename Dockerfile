# syntax=docker/dockerfile:1
# Build stage: compile the release binary with the full Rust toolchain.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked && strip target/release/alb

# Final stage: the binary and the C runtime it links against, nothing else; runs as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/alb /usr/local/bin/alb
COPY deploy/alb.compose.toml /etc/alb/alb.toml
USER nonroot:nonroot
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/alb"]
CMD ["run", "--config", "/etc/alb/alb.toml"]
