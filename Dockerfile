# The ledger service image (gateway and sensor simulator images follow with their issue).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p ledger-service

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ledger-service /usr/local/bin/ledger-service
USER nobody
ENTRYPOINT ["ledger-service"]
