# One image for every service: `dispatch <subcommand>`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin dispatch \
 && cp target/release/dispatch /usr/local/bin/dispatch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home dispatch
COPY --from=build /usr/local/bin/dispatch /usr/local/bin/dispatch
USER 10001
ENV DISPATCH_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080 9090
ENTRYPOINT ["dispatch"]
CMD ["all"]
