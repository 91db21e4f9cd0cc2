# One image for every service: `dispatch <subcommand>` (ingest,
# sender --channel sms, timer, notifier, provider-sim, all, account create,
# healthcheck, ...).
#
#   docker build -t dispatch .
#   docker run --rm dispatch --help
#
# Stages:
#   planner  the workspace reduced to what decides the dependency build:
#            every Cargo.toml, Cargo.lock, build scripts, and an empty
#            stand-in for each crate root;
#   build    compiles the dependencies from the planner's output (a layer
#            that stays cached until a manifest or the lock file changes),
#            then the real sources;
#   runtime  distroless (glibc, libgcc, CA certificates, no shell), non-root.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS planner
WORKDIR /src
COPY . .
# Finds the workspace members instead of listing them, so a new crate under
# services/ or shared/ needs no change here. Only this stage's output is
# used later; when it is unchanged, the next COPY --from is a cache hit.
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.lock /skeleton/; \
    find . -name Cargo.toml -not -path './target/*' | while read -r manifest; do \
        dir=$(dirname "$manifest"); \
        mkdir -p "/skeleton/$dir/src"; \
        cp "$manifest" "/skeleton/$dir/"; \
        if [ -f "$dir/build.rs" ]; then cp "$dir/build.rs" "/skeleton/$dir/"; fi; \
        if [ -f "$dir/src/lib.rs" ]; then : > "/skeleton/$dir/src/lib.rs"; fi; \
        if [ -f "$dir/src/main.rs" ]; then echo 'fn main() {}' > "/skeleton/$dir/src/main.rs"; fi; \
    done

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies only: rebuilt when Cargo.toml files or Cargo.lock change.
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked --bin dispatch
COPY . .
# The stand-ins above were compiled after the real files were last
# modified; touching the real ones makes cargo rebuild the workspace crates
# instead of keeping the empty ones. Debug sections (line tables, for file
# and line numbers in panics) are compressed rather than stripped.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin dispatch \
 && objcopy --compress-debug-sections=zlib target/release/dispatch /usr/local/bin/dispatch \
 && /usr/local/bin/dispatch --version

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /usr/local/bin/dispatch /usr/local/bin/dispatch
# distroless "nonroot": uid/gid 65532. Numeric, so that Kubernetes'
# runAsNonRoot can verify it.
USER 65532:65532
# Listen on every interface inside a container; `dispatch healthcheck`
# still asks 127.0.0.1.
ENV DISPATCH_HTTP_ADDR=0.0.0.0:8080 \
    DISPATCH_ADMIN_ADDR=0.0.0.0:9090
# 8080: HTTP API (ingest); 9090: admin (/healthz, /readyz, /metrics), every
# service.
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["dispatch", "healthcheck"]
ENTRYPOINT ["dispatch"]
CMD ["all"]
