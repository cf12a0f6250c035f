# Redis with the rmq module, built from this repository (see docs/operations.md, "Docker").
#   docker build -t redis-rmq .
#   docker run -d -p 6379:6379 -v rmq-data:/data redis-rmq
# Both stages are Debian bookworm, so the module links against the C library it runs with.

FROM rust:1-bookworm AS build
# bindgen (used by the redis-module crate) needs libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rmq

FROM redis:7.2-bookworm
COPY --from=build /src/target/release/librmq.so /usr/local/lib/redis/modules/librmq.so
# redis.conf.example with the module at an absolute path and the data in /data.
COPY redis.conf.example /usr/local/etc/redis/redis.conf
RUN sed -i 's#^loadmodule ./target/release/librmq.so#loadmodule /usr/local/lib/redis/modules/librmq.so#' \
        /usr/local/etc/redis/redis.conf \
 && printf 'dir /data\nbind 0.0.0.0\nprotected-mode no\n' >> /usr/local/etc/redis/redis.conf \
 && grep -q '^loadmodule /usr/local/lib/redis/modules/librmq.so' /usr/local/etc/redis/redis.conf
EXPOSE 6379
CMD ["redis-server", "/usr/local/etc/redis/redis.conf"]
