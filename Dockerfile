# `melodist serve` as a container: the model server of the README's "Model server" section.
#
#   docker build -t melodist-serve .
#   docker run --rm -v melodist-data:/data melodist-serve token add alice --db /data/server.db
#   docker run -d -p 8088:8088 -v melodist-data:/data melodist-serve
#
# The server listens on 0.0.0.0:8088 inside the container, so every /v1 call needs an API
# token: create one first (as above; it is printed once). History and token hashes live in
# /data/server.db: keep /data on a volume. To serve other models, mount a folder with
# neural/ (and vae/) over /models; a changed folder is picked up without a restart.

FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential pkg-config libasound2-dev libjack-jackd2-dev libx11-dev \
        libx11-xcb-dev libxcb1-dev libxcb-icccm4-dev libxcb-dri2-0-dev libxcursor-dev \
        libgl1-mesa-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin melodist

FROM debian:bookworm-slim
COPY --from=build /src/target/release/melodist /usr/local/bin/melodist
COPY models /models
VOLUME /data
EXPOSE 8088
ENTRYPOINT ["/usr/local/bin/melodist", "serve"]
CMD ["--bind", "0.0.0.0:8088", "--db", "/data/server.db", "--models", "/models"]
