# One image with the programs: ledger-service, ledger-witness, gateway-uplink and sensor-sim (plus the
# demonstration enrollment script). docker-compose.yml runs each as its own service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The browser's verifier (web-verifier, WebAssembly) is built into ledger-service.
RUN rustup target add wasm32-unknown-unknown
COPY . .
RUN cargo build --release -p ledger-service -p ledger-witness -p gateway-uplink -p sensor-fw --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ledger-service /src/target/release/ledger-witness /src/target/release/gateway-uplink /src/target/release/sensor-sim /usr/local/bin/
COPY deploy/demo-devices.sh /usr/local/bin/demo-devices
# Mount points of the named volumes, owned by the user the programs run as (a new volume takes
# the ownership of the folder it is mounted over).
RUN mkdir -p /keys /devices /spool /witness /witness-pub && chown nobody /keys /devices /spool /witness /witness-pub
USER nobody
ENTRYPOINT ["ledger-service"]
