# Builds Ferry's binaries: `ferry` (CLI, embedded default) and `ferry-sim`
# (the SharePoint / Microsoft 365 emulator).
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry-coordinator --bin ferry -p ferry-sim --bin ferry-sim

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ferry /src/target/release/ferry-sim /usr/local/bin/
RUN useradd --system --home /var/lib/ferry --create-home ferry
USER ferry
WORKDIR /var/lib/ferry
ENTRYPOINT ["ferry"]
