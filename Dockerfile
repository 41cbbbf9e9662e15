# syntax=docker/dockerfile:1
#
# Evident's image: one static binary (./cmd/evident) on distroless, as a
# non-root user. Build with `docker build -t evident .` or through
# docker-compose.yml; run `evident serve` (the default) or any other
# subcommand: `docker run --rm evident stream user-<id>`.

ARG GO_VERSION=1.26

# --- build: a static binary, no cgo (the SQLite driver is pure Go) --------------
FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that a change to the source does not fetch them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/evident ./cmd/evident \
 && mkdir -p /out/data

# --- health checks: distroless has no shell, curl or wget; busybox's musl ------
# build is one static file whose wget is enough to ask /readyz.
FROM busybox:1.37-musl AS busybox

# --- run -----------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/evident /usr/local/bin/evident
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
# The embedded SQLite store's directory, used when no external store is set.
COPY --from=build --chown=65532:65532 /out/data /data
ENV EVIDENT_DATA_DIR=/data \
    EVIDENT_HTTP_ADDR=:8080
VOLUME ["/data"]
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/evident"]
CMD ["serve"]
