# The pgcdc container image: `make image` (or `docker build -t registry.example.com/pgcdc:0.1.0 .`).
#
# pgcdc links dynamically against glibc (libc, libm, libgcc_s; TLS is rustls/aws-lc, built in),
# so the builder and the runtime share one Debian release (12, bookworm): a binary built on a
# newer glibc would not start on an older one. The runtime is distroless "cc": glibc, libgcc_s,
# CA certificates (the S3 client and sslrootcert=system read the system trust store), tzdata,
# /etc/passwd with the nonroot user; no shell, no package manager.
#
# Pin the base images by digest for reproducible builds (FROM image:tag@sha256:...); the tags
# here are what the digests should be taken from.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# aws-lc-sys builds its C code with gcc (in the slim image); no cmake, no OpenSSL headers.
COPY . .
# Cache mounts keep the registry and the compiled dependencies between builds (BuildKit, buildah
# and podman all honour them); the binary is copied out because the target cache is not part of
# the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pgcdc \
    && cp target/release/pgcdc /usr/local/bin/pgcdc

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/pgcdc /usr/local/bin/pgcdc
# 65532 is distroless's "nonroot"; the Kubernetes manifest runs as the same UID/GID.
USER 65532:65532
# sink.spool_dir defaults to /tmp/pgcdc-<slot>-spool; in production point it at a volume (the
# Kubernetes manifest mounts one at /var/lib/pgcdc), the root filesystem can stay read-only.
# metrics.listen: /metrics, /healthz, /readyz. Set it to 0.0.0.0:9464 in the config (the default
# 127.0.0.1 is unreachable from outside the container).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/pgcdc"]
CMD ["run", "--config", "/etc/pgcdc/pgcdc.toml"]
